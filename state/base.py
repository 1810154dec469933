"""The store contract. SQLite implements it now (``state.sqlite``); others may later.

Contract:

* **Atomic groups.** Every write happens inside ``with store.transaction() as tx:``; all of
  a transaction's writes become durable together at the end of the block, or none do (an
  exception inside the block rolls it back). Several runs' changes may share a transaction
  (group commit); the order of journal entries within a run is kept.
* **Missing things.** ``load_run`` raises :class:`engine.errors.RunNotFound`; ``find_run``
  returns None.
* **Single writer.** One engine writes a given run at a time; the caller holds the run's
  lock (``state.locks``) and re-reads the run after taking it.
* **Durability.** With ``synchronous="full"`` (the default) a committed transaction
  survives power loss; with ``"normal"`` it survives a crash of the process only.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Iterable, Mapping, Protocol

from certwright.state.records import JournalEntry, RunRecord, Timer


class Tx(Protocol):
    """The writes allowed inside one transaction."""

    def append(self, entry: JournalEntry) -> int:
        """Append a journal entry; returns its seq."""
        ...

    def put_run(self, run: RunRecord) -> None:
        """Insert or replace the run's projection row."""
        ...

    def add_timer(self, run_id: str, entry: int, kind: str, due: str) -> int:
        """Add a durable timer; returns its id."""
        ...

    def clear_timers(self, run_id: str, kinds: Iterable[str] | None = None) -> None:
        """Drop the run's timers (all, or of the given kinds)."""
        ...

    def set_correlations(self, run_id: str, entry: int, keys: Iterable[str]) -> None:
        """Replace the run's correlation keys."""
        ...

    def put_spec(self, spec_hash: str, name: str, source: str, text: str) -> None:
        """Keep a pipeline's text under its hash (idempotent)."""
        ...

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        """Record that an outside message was handled; False if it already was."""
        ...

    def put_secrets(self, run_id: str, secrets: Mapping[str, Any]) -> None:
        """Replace the run's secrets (kept apart from the journal)."""
        ...


class Store(Protocol):
    """A durable store of runs, their journals, timers and correlations."""

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def load_run(self, run_id: str) -> RunRecord: ...

    def find_run(self, run_id: str) -> RunRecord | None: ...

    def list_runs(self, statuses: Iterable[str] | None = None) -> list[RunRecord]: ...

    def journal(self, run_id: str) -> list[JournalEntry]: ...

    def timers(self) -> list[Timer]: ...

    def runs_for(self, key: str) -> list[str]: ...

    def load_secrets(self, run_id: str) -> dict[str, Any] | None:
        """The run's secrets as last put, or None."""
        ...

    def load_spec(self, spec_hash: str) -> tuple[str, str, str]:
        """(name, source, text) of a pinned pipeline; raises StoreError when missing."""
        ...

    def close(self) -> None: ...
