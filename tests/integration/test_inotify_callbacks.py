"""The daemon's one inotify watcher serves the mail router and file waits on one folder:
each callback hears only the events it asked for, and unwatching one leaves the other."""
from __future__ import annotations

import queue
from pathlib import Path

from certwright.mail.inotify import CHANGES, NewFileWatcher


def _next(q: queue.Queue[str | None]) -> str | None:
    return q.get(timeout=10)


def test_two_callbacks_on_one_folder_each_get_their_own_events(tmp_path: Path):
    watcher = NewFileWatcher()
    new: queue.Queue[str | None] = queue.Queue()
    changes: queue.Queue[str | None] = queue.Queue()

    def on_changes(name: str | None) -> None:
        changes.put(name)
    try:
        watcher.watch(str(tmp_path), new.put)
        watcher.watch(str(tmp_path), on_changes, CHANGES)
        (tmp_path / "a").write_text("x")  # IN_CREATE, then IN_CLOSE_WRITE
        assert _next(new) == "a"
        assert _next(changes) == "a"  # created
        assert _next(changes) == "a"  # written
        (tmp_path / "sub").mkdir()  # a folder: only for those that asked (CHANGES)
        assert _next(changes) == "sub"
        (tmp_path / "a").unlink()
        assert _next(changes) == "a"
        watcher.unwatch(str(tmp_path), on_changes)
        (tmp_path / "b").write_text("y")
        assert _next(new) == "b"  # the mail router's callback is still there
        (tmp_path / "c").write_text("z")
        assert _next(new) == "c"
        assert changes.empty()  # nothing of b or c reached the dropped callback
        assert new.empty()  # and no folder, write or removal reached the other one
    finally:
        watcher.stop()
