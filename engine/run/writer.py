"""The engine's write path: one transaction at a time, journal entries, run projections.

:meth:`JournalWriter.record` appends an entry and folds it into the run (``journal.apply``)
in the open transaction; the run's new record is held in the book, and all records changed
in a transaction are written just before it commits, so ``fold(journal) == stored run``.
Every transaction counts (``commits``), and interceptors hear ``committed(count)`` right
after each successful commit.

A step that took outside messages has its marks written by :meth:`JournalWriter.take`
(all or none, in the open transaction) and its follow-up kept by
:meth:`JournalWriter.after_commit`: run right after the commit (and its hooks), dropped if
the transaction rolls back. A crash between the two leaves the marks committed and the
follow-up undone; whoever reads the marks finishes it (the mail intake's ``finish_taken``).

Hazard: ``tx`` exists only inside :meth:`JournalWriter.transaction`; asking for it outside
raises CertwrightError (a bug in the engine, not a user's error).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import structlog

from certwright.clock import Clock, format_instant
from certwright.engine.run.book import RunBook
from certwright.engine.run.interceptor import Interceptors
from certwright.engine.run.journal import Data, Kind, apply
from certwright.errors import CertwrightError
from certwright.state.base import Store, Tx
from certwright.state.records import JournalEntry, RunRecord

__all__ = ["JournalWriter"]

log = structlog.get_logger("certwright.engine")


class JournalWriter:
    """Writes the journal of an engine's runs into its store (the only writer)."""

    def __init__(self, store: Store, book: RunBook, clock: Clock,
                 hooks: Interceptors) -> None:
        self._store = store
        self._book = book
        self._clock = clock
        self._hooks = hooks
        self._tx: Tx | None = None
        self._after: list[Callable[[], object]] = []
        self.commits = 0

    @property
    def tx(self) -> Tx:
        """The open transaction."""
        if self._tx is None:
            raise CertwrightError("the engine wrote outside a transaction")
        return self._tx

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction: the changed runs are put at its end, then it commits (or rolls
        back, dropping the hooks' notes). Counted either way."""
        ok = False
        try:
            with self._store.transaction() as tx:
                self._tx = tx
                try:
                    yield tx
                    for run in self._book.take_dirty():
                        tx.put_run(run)
                finally:
                    self._book.dirty.clear()
                    self._tx = None
            ok = True
        finally:
            self.commits += 1
            if not ok:
                self._after.clear()
                self._hooks.discard()
        self._hooks.committed(self.commits)
        actions, self._after = self._after, []
        for action in actions:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - the commit stands; its reader finishes
                log.warning("after_commit_failed", error=f"{type(exc).__name__}: {exc}")

    def take(self, marks: Iterable[tuple[str, str]], run_id: str) -> bool:
        """Mark outside messages processed for ``run_id`` in the open transaction: all of
        them, or none and False when one was taken already (by another process, or by
        another run in this transaction). The transaction holds the store's write lock, so
        nobody marks in between the look and the inserts."""
        return self.tx.mark_all_processed(marks, run_id)

    def after_commit(self, action: Callable[[], object]) -> None:
        """Call ``action`` once the open transaction has committed (never if it fails)."""
        if self._tx is None:
            raise CertwrightError("the engine wrote outside a transaction")
        self._after.append(action)

    def record(self, run: RunRecord | None, rid: str, kind: Kind, data: Data) -> RunRecord:
        """Append entry ``kind`` to the run's journal; returns the run after it."""
        entry = JournalEntry(run_id=rid, kind=kind, data=cast(dict[str, Any], data),
                             at=format_instant(self._clock.now()))
        seq = self.tx.append(entry)
        new = apply(run, replace(entry, seq=seq))
        self._book.keep(new)
        return new
