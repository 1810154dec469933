"""A request dropped in the daemon's inbox starts its run when the watcher sees it whole,
not at the loop's next sweep; a file only seen created waits for the sweep. The daemon runs
in a thread of this process, on a real inbox folder and SQLite store, with its sweep put an
hour away so only the watcher's wake can start a run."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileClosedEvent, FileCreatedEvent

from certwright.engine.daemon import service
from certwright.engine.daemon.config import DaemonConfig
from certwright.engine.daemon.inbox import Inbox, PipelineCatalog
from tests.fixtures.daemon.harness import drop_request, statuses, wait_for

MINIMAL = Path(__file__).parent.parent / "fixtures" / "pipelines" / "valid" / "minimal.yaml"


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    monkeypatch.setattr(service, "HOUSEKEEPING", 3600.0)  # the first sweep runs at start only
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    d = service.Daemon(state, DaemonConfig(inbox=inbox), workers=1)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(d.run()), daemon=True)
    thread.start()
    assert d.ready.wait(30), result
    try:
        yield state, inbox
    finally:
        d.stop()
        thread.join(30)


def test_a_request_renamed_into_the_inbox_starts_its_run_at_once(daemon, tmp_path: Path):
    state, inbox = daemon
    drop_request(inbox, "req.json", str(MINIMAL), {}, run_id="dropped")
    wait_for(lambda: statuses(state).get("dropped") == ("only", "succeeded"), 20,
             "the dropped request's run (the next sweep is an hour away)")
    assert (inbox / "done" / "dropped-req.json").exists()


def test_a_file_only_seen_created_waits_for_the_sweep(tmp_path: Path):
    """The watcher's ``created`` may come before the writer has finished: that name is
    left for the sweep; a rename or a close after writing is taken now."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    started: list[str] = []
    inbox = Inbox(folder, PipelineCatalog(None), lambda *a, **k: started.append(a[2]) or a[2],
                  lambda rid: False)
    woken: list[bool] = []
    noted = inbox.handler(lambda: woken.append(True))
    (folder / "half.json").write_text("{")  # a writer still at work
    noted.dispatch(FileCreatedEvent(str(folder / "half.json")))
    assert woken
    assert not inbox.pending()
    assert inbox.process() == 0
    assert (folder / "half.json").exists()
    noted.dispatch(FileClosedEvent(str(folder / "half.json")))
    assert inbox.pending()
    assert inbox.process() == 1  # taken (and refused as a bad request, into failed/)
    assert not inbox.pending()
    assert (folder / "failed" / "half.json").exists()
