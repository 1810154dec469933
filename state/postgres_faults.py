"""What a PostgreSQL error means for the store: the same :class:`StoreFault` kinds as SQLite's.

The PostgreSQL store's edges turn a ``psycopg.Error`` (or the pool's timeout) into a
:class:`ServerFault` through :func:`pg_fault`, so the CLI reports it as every store error
(exit 5) with a sentence saying what was tried, on which server, why it failed and what to
do. Kinds, from the error's SQLSTATE, or its class when the server said nothing:

* ``unavailable``: the server cannot be reached or went away (connection refused or
  reset, shut down, restarting, too many connections, a refused login, no such database);
  a connection error without a SQLSTATE is one of these.
* ``full``: ``53100`` disk_full, ``53200`` out_of_memory (the server's, not ours).
* ``read-only``: ``25006`` read_only_sql_transaction (a standby, or
  ``default_transaction_read_only``).
* ``damaged``: ``XX001`` data_corrupted, ``XX002`` index_corrupted.
* ``io``: ``58030`` io_error.
* ``unavailable`` too: ``55P03`` lock_not_available, another process held the store's
  write lock longer than the lock timeout (a transaction left open, a stopped process);
  ``25P03`` idle_in_transaction_session_timeout, the server ended this session, which sat
  in a transaction too long (this process was the stopped one: see
  ``state.postgres.IDLE_TX_TIMEOUT_MS``).

Anything else (a syntax error, a constraint we broke) is a bug and propagates as it is.

Hazard: a fault never means data is gone: PostgreSQL rolls back a transaction whose
connection broke or whose statement failed, so the store holds what it held before.
"""
from __future__ import annotations

from certwright.errors import StoreError
from certwright.state.faults import SAID, StoreFault

ADVICE = {
    "unavailable": "check that the PostgreSQL server runs and accepts this user (the "
                   "URL of --store, CERTWRIGHT_STORE or the configuration's store:), then "
                   "run the command again; nothing committed was lost, and `certwright "
                   "resume RUN` goes on",
    "full": "the database server ran out of disk or memory: free space there, then run the "
            "command again; nothing committed was lost",
    "read-only": "the server accepts no writes (a standby, or read-only transactions): "
                 "point the URL at the primary, then run the command again; nothing "
                 "committed was lost",
    "damaged": "the server reports damaged data; certwright will not write into it: ask "
               "its administrator to check the cluster (amcheck) and restore from a backup",
    "io": "the database server reported an I/O error: check its disks, then run the "
          "command again; nothing committed was lost",
}

_BY_STATE = {"53100": "full", "53200": "full", "25006": "read-only", "XX001": "damaged",
             "XX002": "damaged", "58030": "io", "55P03": "unavailable", "25P03": "unavailable",
             # rolled back by the server for a deadlock or a serialization failure: the
             # store could not take the write now (tried again, it goes through)
             "40P01": "unavailable", "40001": "unavailable"}
_UNAVAILABLE_CLASSES = ("08", "57", "53", "28", "3D")  # connection, shutdown, resources,
# authorization, no such database


class ServerFault(StoreFault):
    """A PostgreSQL store could not be read or written; ``path`` is the server's URL with
    no password (``kind``, ``doing`` and ``cause`` as in StoreFault)."""

    def __init__(self, kind: str, path: str, doing: str, cause: str) -> None:
        self.kind, self.path, self.doing, self.cause = kind, path, doing, cause
        StoreError.__init__(self, f"{SAID[kind]}: {doing} the PostgreSQL store {path} "
                                  f"failed ({cause}); {ADVICE[kind]}")


def kind_of(exc: BaseException) -> str | None:
    """The fault kind of ``exc``, or None when it is no storage failure."""
    import psycopg
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return "unavailable"
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    if state in _BY_STATE:
        return _BY_STATE[state]
    if state.startswith(_UNAVAILABLE_CLASSES):
        return "unavailable"
    if not state and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return "unavailable"
    return None


def _words(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] or type(exc).__name__)


def pg_fault(exc: BaseException, where: str, doing: str) -> ServerFault | None:
    """The :class:`ServerFault` for ``exc`` met ``doing`` something on ``where``, or None."""
    kind = kind_of(exc)
    if kind is None:
        return None
    return ServerFault(kind, where, doing, _words(exc))
