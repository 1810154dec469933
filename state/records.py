"""Plain records the store keeps: runs, journal entries, timers, certificates.

A :class:`RunRecord` is a projection of the run's journal: ``engine.journal.fold`` applied
to every :class:`JournalEntry` of the run gives it back exactly. The store writes both in
one transaction, so the two can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Run statuses. "active" ones need the engine; "parked" ones wait for an event or a timer.
RUNNING = "running"      # a step is due or executing
WAITING = "waiting"      # a wait step is parked until mail, a file, or an instant
BACKOFF = "backoff"      # a step failed and waits for its retry timer
SUCCEEDED = "succeeded"  # reached a final state with final: success
FAILED = "failed"        # reached a final failure state, or a step failed with nowhere to go
CANCELLED = "cancelled"  # cancelled by a user

FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass
class RunRecord:
    """The current state of one run (the fold of its journal)."""

    id: str
    pipeline: str
    spec_hash: str
    state: str = ""
    status: str = RUNNING
    entry: int = 0            # how many states this run has entered; part of step keys
    step_index: int = 0       # next step of the current state to run
    attempt: int = 0          # attempt number of the current step (0: not started)
    inflight: str | None = None  # idempotency key of a started, unfinished step
    inputs: dict[str, Any] = field(default_factory=dict)   # secret ones redacted
    vars: dict[str, Any] = field(default_factory=dict)     # step outputs by step id
    memo: dict[str, Any] = field(default_factory=dict)     # a waiting step's memo
    waiting: str | None = None     # what a waiting step waits for
    watch: list[str] = field(default_factory=list)  # paths whose changes wake the wait
    deadline: str | None = None    # the current state's timeout instant (ISO)
    wake_at: str | None = None     # next retry or wake-up instant (ISO)
    counters: dict[str, int] = field(default_factory=dict)  # entries per state
    error: str | None = None
    alarms: list[str] = field(default_factory=list)
    created: str = ""
    updated: str = ""
    seq: int = 0              # seq of the last journal entry applied
    host: str = ""            # where its host-bound steps run ("": any host; older runs)
    wants_host: str | None = None  # a host-bound step waits for a daemon of this host

    def __copy__(self) -> RunRecord:
        """The shallow copy ``copy.copy`` makes, without its generic machinery (four times
        slower): the engine copies a run for every journal entry it records."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


@dataclass(frozen=True)
class JournalEntry:
    """One append-only journal row: what happened to a run, when."""

    run_id: str
    kind: str
    data: dict[str, Any]
    at: str
    seq: int = 0


@dataclass(frozen=True, order=True)
class Timer:
    """A durable deadline: fire ``kind`` for ``run_id`` at ``due`` if still in ``entry``."""

    due: str
    id: int
    run_id: str
    entry: int
    kind: str  # timeout | retry | wake


# Certificate statuses the inventory stores; "valid", "expiring" and "expired" are not
# stored but told from the dates when the inventory is read.
INSTALLED = "installed"
REVOKED = "revoked"


@dataclass
class CertificateRecord:
    """One certificate of the inventory: its current version, by name.

    ``paths`` maps a role (cert, key, chain, fullchain) to its installed file; ``inputs``
    are the inputs of the run that made it (secret ones redacted), from which a renewal
    starts the same pipeline again; ``renew_at`` is the next renewal instant the schedule
    gives; ``ari`` is left for an ACME renewal window (RFC 9773) a CA suggests. A revoked
    certificate has ``status`` revoked, ``revoked_at`` and ``revoke_reason``, and no
    ``renew_at``: it is never renewed by the schedule. Records put before revocation
    existed read with both None (the fields live in the JSON body: no migration).
    """

    name: str
    run_id: str
    pipeline: str = ""
    names: list[str] = field(default_factory=list)
    issuer: str = ""              # the CA's URL or the ACME directory
    issuer_dn: str = ""           # the issuing certificate's subject
    serial: str = ""              # hex
    fingerprint_sha256: str = ""
    not_before: str = ""          # ISO instants, UTC
    not_after: str = ""
    dir: str = ""
    paths: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    status: str = INSTALLED       # installed | revoked
    revoked_at: str | None = None  # when ``certwright revoke`` had the CA revoke it
    revoke_reason: str | None = None  # its RFC 5280 reason (keyCompromise, superseded, ...)
    renew_at: str | None = None
    ari: dict[str, Any] | None = None
    updated: str = ""


@dataclass
class RenewalRecord:
    """The renewal schedule's memory of one certificate (by name), beside its inventory
    record: a renewal run in flight (``run_id``, renewing the run ``renews``), and the
    back-off after failed renewals (``attempts`` in a row, no attempt before ``next_at``,
    ``last_error``). No record: nothing in flight and nothing failed since the last
    success; when a certificate is due comes from its inventory record alone.
    """

    name: str
    attempts: int = 0
    next_at: str | None = None     # ISO instant, UTC: the back-off's end
    last_error: str | None = None
    run_id: str | None = None      # the renewal run started and not settled yet
    renews: str = ""               # the run whose certificate it renews
    updated: str = ""


STALE_BEATS = 3  # a daemon's row older than this many heartbeat intervals is stale


@dataclass
class DaemonRecord:
    """One daemon serving the store, as its last heartbeat put it (one row per ``id``,
    ``host:pid`` of the process, so several daemons on several hosts each have theirs).

    ``heartbeat`` is the instant (UTC, by the daemon's clock) of its last write, every
    ``interval`` seconds; a reader calls a row stale when it is older than 3 intervals
    (the process hangs, is stopped, or died without its goodbye, which deletes the row).
    ``runs``: the unfinished runs it drove at that heartbeat; ``leases``: the run leases it
    held (0 with SQLite, where one daemon serves a store under a file lock; the PostgreSQL
    store's leases fill it); ``metrics``: the URL of its ``/metrics``, if it serves one.
    """

    id: str
    host: str
    pid: int
    started: str                   # ISO instants, UTC
    heartbeat: str
    interval: float = 10.0
    runs: int = 0
    leases: int = 0
    metrics: str | None = None
    version: str = ""
    machine: str = ""              # the machine's host name (``host`` may be configured)

    def is_stale(self, age: float) -> bool:
        """Whether a heartbeat ``age`` seconds old is past :data:`STALE_BEATS` intervals."""
        return age > STALE_BEATS * self.interval
