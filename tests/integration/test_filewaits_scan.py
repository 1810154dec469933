"""The daemon's sync-time scan for runs parked elsewhere reads only what changed.

``FileWaits.scan`` runs on every ``sync_interval`` of an idle daemon; with many parked runs
it read the ids of every waiting run each time (100,000 parked runs: 13-17 % of a core).
These tests count the rows the scan reads from a real SQLite store, so the cost of an idle
scan is shown without timing it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certwright.engine.daemon.filewaits import FileWaits
from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.mail.inotify import NewFileWatcher
from certwright.state.sqlite import SQLiteStore

PIPELINE = """
pipeline: filewait
version: 1
inputs:
  path: {type: string, required: true}
initial: waiting
states:
  waiting:
    run:
      - step: wait.file
        with: {path: "${path}", poll: 0}
    next: done
  done: {final: success}
"""


class CountingStore:
    """A real store that counts the rows its readers return (nothing else changes)."""

    READERS = ("run_ids", "find_run", "load_run", "list_runs", "waits_after", "journal")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in self.READERS:
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            out = found(*args, **kwargs)
            self.rows += len(out) if isinstance(out, list) else int(out is not None)
            return out
        return counted


def _park(state: Path, folder: Path, ids: list[str]) -> None:
    """Park runs on files in ``folder`` from another engine (as ``run --no-wait`` does)."""
    store = SQLiteStore(state / "certwright.sqlite")
    eng = Engine(store, state, options=EngineOptions(inline=True))
    eng.open()
    spec = load_pipeline_text(PIPELINE, "filewait.yaml")
    eng.start_runs(spec, [{"path": str(folder / f"{i}.txt")} for i in ids], ids)
    eng.run_until_idle()
    eng.close()
    store.close()


@pytest.mark.parametrize("parked", [3, 60])
def test_an_idle_scan_reads_no_rows_however_many_runs_are_parked(tmp_path: Path,
                                                                 parked: int) -> None:
    """After the first scan, a scan with nothing new reads no row, for 3 or 60 parked runs;
    a run parked since is found (its rows only) and watched."""
    folder = tmp_path / "files"
    folder.mkdir()
    _park(tmp_path, folder, [f"r{i}" for i in range(parked)])
    store = CountingStore(SQLiteStore(tmp_path / "certwright.sqlite"))
    watcher = NewFileWatcher()
    try:
        waits = FileWaits(watcher)
        assert waits.scan(store) == parked  # type: ignore[arg-type]
        store.rows = 0
        assert waits.scan(store) == 0  # type: ignore[arg-type]
        assert store.rows == 0
        _park(tmp_path, folder, ["late"])
        assert waits.scan(store) == 1  # type: ignore[arg-type]
        assert "late" in waits.watched()[str(folder)]
        assert store.rows <= 2  # its journal entry and its record
    finally:
        watcher.stop()
        store.close()


@pytest.mark.parametrize("parked", [3, 60])
def test_an_idle_heartbeat_reads_no_run_rows(tmp_path: Path, parked: int) -> None:
    """The heartbeat counts the runs it drives once, then again only after the engine
    committed or a run parked elsewhere: an idle beat reads no run row, for 3 or 60."""
    from certwright.clock import FakeClock
    from certwright.engine.daemon.heartbeat import Heartbeat
    folder = tmp_path / "files"
    folder.mkdir()
    _park(tmp_path, folder, [f"r{i}" for i in range(parked)])
    store = CountingStore(SQLiteStore(tmp_path / "certwright.sqlite"))
    try:
        beat = Heartbeat(store, FakeClock())  # type: ignore[arg-type]
        beat.beat()
        assert store.list_daemons()[0].runs == parked
        store.rows = 0
        beat.beat()
        assert store.rows == 0
        beat.committed(1)  # the engine committed: the next beat counts again
        beat.beat()
        assert store.rows == parked
        _park(tmp_path, folder, ["late"])
        store.rows = 0
        beat.beat()
        assert store.list_daemons()[0].runs == parked + 1
    finally:
        store.close()
