"""Where steps execute: a bounded pool of daemon threads, or inline for deterministic tests.

Daemon threads, not ``concurrent.futures``: when a user presses Ctrl-C the foreground
process must be able to leave at once, parking a step that is still executing; the
journal already holds its intent, so ``resume`` runs it again with the same key.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class WorkerPool:
    """Runs submitted callables on ``size`` daemon threads."""

    def __init__(self, size: int = 8) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"certwright-step-{i}",
                                          daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


class InlinePool:
    """Runs each job at once in the caller's thread (tests, benchmarks of the core)."""

    def submit(self, job: Callable[[], None]) -> None:
        job()

    def shutdown(self) -> None:
        return None
