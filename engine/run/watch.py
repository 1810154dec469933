"""Turn file-system changes into wake-ups for waiting runs (watchdog: inotify on Linux).

Watchers only translate events into ``engine.wake(run_id)``/``engine.submit(event)``; they
never touch run state. A wait that watches a path that does not exist yet watches the
nearest existing parent folder.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: "PathWatcher", folder: str) -> None:
        self.owner = owner
        self.folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.owner._fire(self.folder, str(event.src_path))


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

    def _fire(self, folder: str, path: str) -> None:
        with self._lock:
            ids = list(self._folders.get(folder, ()))
        for rid in ids:
            self._callback(rid, path)

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=5)


def _existing_folder(path: str) -> str:
    p = Path(os.path.abspath(path))
    if p.is_dir():
        return str(p)
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p if p.is_dir() else p.parent)
