"""Turn file-system changes into wake-ups for waiting runs (watchdog: inotify on Linux).

Watchers only translate events into ``engine.wake(run_id)``/``engine.submit(event)``; they
never touch run state. A wait that watches a path that does not exist yet watches the
nearest existing parent folder. :class:`WaitWatcher` is the interceptor that plugs this
into an engine: told (after the commit) that a run waits on paths, it watches them and
wakes the run, so a change that came before the watch began is seen too.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from certwright.engine.run.interceptor import EngineView, Interceptor
from certwright.events import Event


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: PathWatcher, folder: str) -> None:
        self.owner = owner
        self.folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.owner.fire(self.folder, str(event.src_path))


class PathWatcher:
    """Calls ``callback(run_id, path)`` when something changes in a watched folder."""

    def __init__(self, callback: Callable[[str, str], None]) -> None:
        self._callback = callback
        self._observer = Observer()
        self._observer.daemon = True
        self._lock = threading.Lock()
        self._folders: dict[str, set[str]] = {}   # folder -> run ids
        self._watches: dict[str, object] = {}
        self._started = False
        self._stopped = False

    def watch(self, run_id: str, paths: list[str]) -> None:
        """Watch ``paths`` for ``run_id`` (replacing what it watched before)."""
        wanted = {_existing_folder(p) for p in paths}
        with self._lock:
            for folder, ids in list(self._folders.items()):
                if run_id in ids and folder not in wanted:
                    ids.discard(run_id)
            for folder in wanted:
                self._folders.setdefault(folder, set()).add(run_id)
                if folder not in self._watches:
                    self._watches[folder] = self._observer.schedule(
                        _Handler(self, folder), folder, recursive=False)
            if not self._started:
                self._observer.start()
                self._started = True

    def forget(self, run_id: str) -> None:
        with self._lock:
            for ids in self._folders.values():
                ids.discard(run_id)

    def fire(self, folder: str, path: str) -> None:
        with self._lock:
            ids = list(self._folders.get(folder, ()))
        for rid in ids:
            self._callback(rid, path)

    def stop(self) -> None:
        """Stop watching (a repeat call does nothing)."""
        if self._started and not self._stopped:
            self._stopped = True
            self._observer.stop()
            self._observer.join(timeout=5)


class WaitWatcher(Interceptor):
    """Watches the paths runs wait on; a change there is a ``file`` event for the run.

    Call :meth:`stop` when the engine is done. Repeat calls with the paths a run already
    watches do nothing.
    """

    def __init__(self) -> None:
        self._engine: EngineView | None = None
        self._watcher = PathWatcher(self._changed)
        self._watched: dict[str, list[str]] = {}

    def bind(self, engine: EngineView) -> None:
        self._engine = engine

    def waiting(self, run_id: str, paths: list[str]) -> None:
        if self._watched.get(run_id, []) != paths:
            self._watcher.watch(run_id, paths)
            self._watched[run_id] = list(paths)
            if self._engine is not None:
                self._engine.wake(run_id)  # what arrived before the watch began is seen now

    def watching(self, run_id: str) -> list[str]:
        """The paths watched for ``run_id`` (empty: none)."""
        return self._watched.get(run_id, [])

    def _changed(self, run_id: str, path: str) -> None:
        if self._engine is not None:
            self._engine.submit(Event(kind="file", payload={"path": path}), run_id)

    def stop(self) -> None:
        self._watcher.stop()


def _existing_folder(path: str) -> str:
    p = Path(os.path.abspath(path))
    if p.is_dir():
        return str(p)
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p if p.is_dir() else p.parent)
