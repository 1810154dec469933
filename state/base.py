"""The store contract: the :class:`Store` and :class:`Tx` Protocols the engine is typed against.

SQLite implements them (``state.sqlite``); other back-ends must keep every promise below.

Contract:

* **Atomic groups.** Every write happens inside ``with store.transaction() as tx:``; all of
  a transaction's writes become durable together at the end of the block, or none do (an
  exception inside the block rolls it back). Several runs' changes may share a transaction
  (group commit); the order of journal entries within a run is kept.
* **Reads see the open transaction.** Reads of runs and journals made on the store while
  one of its transactions is open include that transaction's writes so far.
* **Missing things.** ``load_*`` raises (``load_run``: :class:`certwright.errors.RunNotFound`,
  ``load_spec``: :class:`certwright.errors.StoreError`); ``find_*`` and the other reads
  return None or an empty list.
* **Single writer per run.** One engine writes a given run at a time; the caller holds the
  run's lock (``state.locks``). A run read before its lock was taken may be stale: re-read
  it after taking the lock (lock, reload, re-check that the work is still needed).
* **Several processes.** ``transaction()`` takes the store's write lock for the whole
  block, so ids and sequence numbers handed out inside it are unique across processes;
  reads outside a transaction never block a writer and see only committed data.
* **Durability.** With ``synchronous="full"`` (the default) a committed transaction
  survives power loss; with ``"normal"`` it survives a crash of the process only.

Hazard: a :class:`Tx` is valid only inside its ``with`` block; keep no reference to it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from certwright.state.artefacts import Artefact
from certwright.state.records import (
    CertificateRecord,
    DaemonRecord,
    JournalEntry,
    RenewalRecord,
    RunRecord,
    Timer,
)
from certwright.state.sealing import Sealer

__all__ = ["Store", "Tx"]


class Tx(Protocol):
    """The writes allowed inside one transaction (nothing is visible to other processes
    before the block ends)."""

    def append(self, entry: JournalEntry) -> int:
        """Append a journal entry (its ``seq`` is ignored); returns the seq assigned.

        Seqs increase with every append, across runs and processes, and are never reused.
        """
        ...

    def put_run(self, run: RunRecord) -> None:
        """Insert or replace the run's projection row (the fold of its journal)."""
        ...

    def add_timer(self, run_id: str, entry: int, kind: str, due: str) -> int:
        """Add a durable timer (``due``: an ISO instant, UTC); returns its id.

        Ids increase, so ``Store.timers_after(id)`` finds the ones added later.
        """
        ...

    def delete_timer(self, timer_id: int) -> None:
        """Drop one timer by id; nothing happens when it is gone already."""
        ...

    def clear_timers(self, run_id: str, kinds: Iterable[str] | None = None) -> None:
        """Drop the run's timers (all, or those of the given kinds); none is no error."""
        ...

    def set_correlations(self, run_id: str, entry: int, keys: Iterable[str]) -> None:
        """Replace all of the run's correlation keys by ``keys`` (empty: none left)."""
        ...

    def put_spec(self, spec_hash: str, name: str, source: str, text: str) -> None:
        """Keep a pipeline's text under its hash; a hash kept already is left as it is."""
        ...

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        """Record that an outside message was handled; False if it already was (then
        nothing changes), so two processes never both handle one message."""
        ...

    def mark_all_processed(self, marks: Iterable[tuple[str, str]], run_id: str | None,
                           ) -> bool:
        """:meth:`mark_processed` for every ``(source, ident)`` of ``marks``, or for none of
        them and False when one was marked already (a step's take of a message and its
        file, all or nothing)."""
        ...

    def put_secrets(self, run_id: str, secrets: Mapping[str, Any]) -> None:
        """Replace the run's secrets (kept apart from the journal, never in it)."""
        ...

    def put_artefact(self, art: Artefact) -> None:
        """Insert or replace what run ``art.run_id`` made under ``art.name`` (its key, CSR,
        certificate, chain): sealed with the store's key when it has one. StoreError for
        a private key when it has none (keys are kept only sealed), or an unknown kind."""
        ...

    def put_certificate(self, cert: CertificateRecord) -> None:
        """Insert or replace the inventory's record of the certificate ``cert.name``;
        every field comes back from ``find_certificate`` as put."""
        ...

    def put_renewal(self, renewal: RenewalRecord) -> None:
        """Insert or replace the renewal schedule's record of ``renewal.name``; every
        field comes back from ``find_renewal`` as put."""
        ...

    def delete_renewal(self, name: str) -> None:
        """Remove the renewal schedule's record of ``name`` (none: nothing happens)."""
        ...

    def put_daemon(self, daemon: DaemonRecord) -> None:
        """Insert or replace the row of daemon ``daemon.id`` (its heartbeat); every field
        comes back from ``list_daemons`` as put."""
        ...

    def delete_daemon(self, daemon_id: str) -> None:
        """Remove daemon ``daemon_id``'s row (a graceful stop); none: nothing happens."""
        ...


class Store(Protocol):
    """A durable store of runs, their journals, timers, correlations, specs and secrets."""

    #: the store key (``state.sealing``): secrets and artefacts are sealed with it; None:
    #: secrets kept in clear (apart from the journal), no private key kept
    sealer: Sealer | None

    def transaction(self) -> AbstractContextManager[Tx]:
        """One atomic group of writes: commits at the end of the block, rolls back when
        it raises. Blocks while another process writes (up to the back-end's timeout,
        then raises StoreError). Not re-entrant."""
        ...

    def load_run(self, run_id: str) -> RunRecord:
        """The run's current record; raises RunNotFound when there is none."""
        ...

    def find_run(self, run_id: str) -> RunRecord | None:
        """The run's current record, or None."""
        ...

    def list_runs(self, statuses: Iterable[str] | None = None) -> list[RunRecord]:
        """Every run (or those with one of ``statuses``), oldest first (created, id)."""
        ...

    def run_ids(self, statuses: Iterable[str], *,
                host: str | None = None) -> list[tuple[str, str]]:
        """(id, spec_hash) of the runs with one of ``statuses``, in no order; cheap (no
        record is decoded), for start-up with many parked runs. With ``host``, only the
        runs that wait for no host or for that one (``wants_host``): an engine of that
        host leaves the others to their hosts' daemons."""
        ...

    def run_counts(self) -> list[tuple[str, str, str, int]]:
        """(pipeline, state, status, how many runs) for each combination that has runs,
        sorted; cheap (no record is decoded), for ``/metrics`` at every scrape."""
        ...

    def journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal in seq order; empty for an unknown run."""
        ...

    def timers(self) -> list[Timer]:
        """Every durable timer, in no order."""
        ...

    def timers_after(self, timer_id: int) -> list[Timer]:
        """The timers whose id is above ``timer_id`` (added since a reader looked)."""
        ...

    def waits_after(self, seq: int) -> list[tuple[int, str]]:
        """(seq, run id) of the ``step_waiting`` journal entries above ``seq``, in seq
        order: the runs that parked since a reader looked (``seq`` its high-water mark,
        0 at first). Reads only those entries (the journal's key), however many runs
        are parked."""
        ...

    def runs_for(self, key: str) -> list[str]:
        """Ids of the runs waiting under correlation ``key`` (empty: none)."""
        ...

    def correlations(self, run_id: str) -> list[str]:
        """The run's correlation keys, sorted."""
        ...

    def load_secrets(self, run_id: str) -> dict[str, Any] | None:
        """The run's secrets as last put, or None."""
        ...

    def artefacts(self, run_id: str, name: str | None = None) -> list[Artefact]:
        """What the run made (``Tx.put_artefact``), by name, opened (or only the one named
        ``name``); empty for none. StoreError when one is sealed and this store has no
        key, or another, or it was altered."""
        ...

    def load_spec(self, spec_hash: str) -> tuple[str, str, str]:
        """(name, source, text) of a pinned pipeline; raises StoreError when missing."""
        ...

    def find_certificate(self, name: str) -> CertificateRecord | None:
        """The inventory's record of certificate ``name``, or None."""
        ...

    def list_certificates(self) -> list[CertificateRecord]:
        """Every certificate of the inventory, by name (empty: none)."""
        ...

    def find_renewal(self, name: str) -> RenewalRecord | None:
        """The renewal schedule's record of certificate ``name``, or None."""
        ...

    def list_renewals(self) -> list[RenewalRecord]:
        """Every record of the renewal schedule, by name (empty: none)."""
        ...

    def list_daemons(self) -> list[DaemonRecord]:
        """Every daemon's last heartbeat, by id (empty: none); stale rows included, the
        reader judges them by ``heartbeat`` and ``interval``."""
        ...

    def is_processed(self, source: str, ident: str) -> bool:
        """Whether ``mark_processed(source, ident, ...)`` was committed."""
        ...

    def close(self) -> None:
        """Release the store's connections; the object is unusable afterwards."""
        ...


if TYPE_CHECKING:  # checked by mypy, not at run time: the SQLite store keeps the contract
    from certwright.state.sqlite import SQLiteStore

    def _sqlite_is_a_store(store: SQLiteStore) -> Store:
        return store
