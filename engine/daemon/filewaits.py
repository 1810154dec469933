"""File waits under the daemon: inotify on the folders ``wait.file`` runs wait on.

:class:`FileWaits` is an interceptor of the daemon's engine. Told (after the commit) that a
run waits on paths, it watches each one's nearest existing folder through the daemon's one
inotify watcher (:class:`certwright.mail.inotify.NewFileWatcher`, the mail router's) and
sends the run a ``file`` event for anything that is created, written, removed or moved
there, so the step re-checks at once rather than on its poll (60 s by default, which stays
as the fallback for what inotify cannot see, such as a change on another machine's share).
A run that leaves its state or finishes is forgotten; a folder no run waits on any more is
unwatched.

Runs parked by another process (``certwright run --no-wait``) never pass through this
engine's ``waiting``: :meth:`FileWaits.scan` (at start and on each of the daemon's syncs)
looks at the runs that parked since it last looked and watches theirs: the first scan
reads the ids of every waiting run, later ones only the journal entries of runs that parked
since (a high-water mark), so an idle daemon's scans do not grow with its parked runs.

Paths the daemon already watches as Maildirs (``skip``) are left to the mail router.
Hazards: callbacks come from the watcher's thread, hooks from the engine's loop: the
registry is guarded by a lock, and a callback only calls ``engine.submit`` (thread-safe).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from certwright.engine.run.interceptor import EngineView, Interceptor
from certwright.events import Event
from certwright.mail.inotify import CHANGES, NewFileWatcher
from certwright.state.base import Store
from certwright.state.records import WAITING, RunRecord

__all__ = ["FileWaits"]

log = structlog.get_logger("certwright.daemon")


def nearest_folder(path: str) -> str:
    """The folder to watch for ``path``: itself if a folder, else the nearest existing
    parent (a wait on ``/a/b/c`` with only ``/a`` there watches ``/a``)."""
    p = Path(os.path.abspath(path))
    if p.is_dir():
        return str(p)
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p if p.is_dir() else p.parent)


class FileWaits(Interceptor):
    """Watches what file-waiting runs wait on (see the module docstring)."""

    def __init__(self, watcher: NewFileWatcher | None,
                 skip: Callable[[str], bool] = lambda path: False) -> None:
        self._watcher = watcher
        self._skip = skip
        self._engine: EngineView | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[list[str], set[str]]] = {}  # run -> (paths, folders)
        self._folders: dict[str, tuple[set[str], Callable[[str | None], None]]] = {}
        self._mark = 0  # the journal seq up to which scans have looked (waits_after)
        self._first = True

    def bind(self, engine: EngineView) -> None:
        self._engine = engine

    # -- engine hooks (after commit, in the engine's loop) --------------------------------
    def waiting(self, run_id: str, paths: list[str]) -> None:
        wanted = [p for p in paths if not self._skip(os.path.realpath(p))]
        self.watch(run_id, wanted)

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        if run.id in self._runs:
            self.watch(run.id, [])

    def run_finished(self, run: RunRecord) -> None:
        self.watch(run.id, [])

    # -- the registry ---------------------------------------------------------------------
    def watch(self, run_id: str, paths: list[str]) -> None:
        """Watch ``paths`` for ``run_id`` instead of what it watched (empty: nothing)."""
        if self._watcher is None:
            return
        folders = {nearest_folder(p) for p in paths}
        with self._lock:
            _, old = self._runs.pop(run_id, ([], set()))
            if folders:
                self._runs[run_id] = (list(paths), folders)
            for folder in old - folders:
                self._drop(folder, run_id)
            for folder in folders - old:
                self._add(folder, run_id)

    def _add(self, folder: str, run_id: str) -> None:
        if folder in self._folders:
            self._folders[folder][0].add(run_id)
            return

        def changed(name: str | None, folder: str = folder) -> None:
            self._changed(folder, name)
        try:
            self._watcher.watch(folder, changed, CHANGES)  # type: ignore[union-attr]
        except OSError as exc:
            log.warning("file_watch_failed", folder=folder, run_id=run_id, error=str(exc),
                        fallback="the wait's poll")
            return
        self._folders[folder] = ({run_id}, changed)

    def _drop(self, folder: str, run_id: str) -> None:
        found = self._folders.get(folder)
        if found is None:
            return
        found[0].discard(run_id)
        if not found[0]:
            del self._folders[folder]
            self._watcher.unwatch(folder, found[1])  # type: ignore[union-attr]

    def _changed(self, folder: str, name: str | None) -> None:
        """From the watcher's thread: every run waiting on ``folder`` re-checks."""
        with self._lock:
            ids = list(self._folders.get(folder, (set(), None))[0])
            moved = [(rid, self._runs[rid][0]) for rid in ids
                     if rid in self._runs and name is not None
                     and any(nearest_folder(p) != folder for p in self._runs[rid][0])]
        for rid, paths in moved:  # a folder on the way appeared: watch deeper
            self.watch(rid, paths)
        path = os.path.join(folder, name) if name else folder
        if self._engine is not None:
            for rid in ids:
                self._engine.submit(Event(kind="file", payload={"path": path}), rid)

    def watched(self) -> dict[str, set[str]]:
        """Folder -> run ids watched now (for tests and status)."""
        with self._lock:
            return {f: set(ids) for f, (ids, _) in self._folders.items()}

    # -- runs parked elsewhere ------------------------------------------------------------
    def scan(self, store: Store) -> int:
        """Watch the paths of waiting runs parked by another process since the last scan;
        returns how many were added. The first scan reads the ids of every waiting run;
        later ones read only the journal's ``step_waiting`` entries above the high-water
        mark (``Store.waits_after``) and the records of those runs, so an idle daemon's
        scan costs the same with 10 or 100,000 parked runs. The mark is read before the
        ids, so a run parking in between is found by the next scan (twice is harmless)."""
        if self._watcher is None:
            return 0
        newer = store.waits_after(self._mark)
        if newer:
            self._mark = newer[-1][0]
        if self._first:
            self._first = False
            fresh = {rid for rid, _ in store.run_ids([WAITING])}
        else:
            fresh = {rid for _, rid in newer}
        n = 0
        for rid in sorted(fresh):
            if rid in self._runs:
                continue
            run = store.find_run(rid)
            if run is None or run.status != WAITING or not run.watch:
                continue
            wanted = [p for p in run.watch if not self._skip(os.path.realpath(p))]
            if wanted:
                self.watch(rid, wanted)
                log.info("file_wait_adopted", run_id=rid, paths=wanted)
                n += 1
        return n
