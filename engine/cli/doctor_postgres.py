"""``doctor``'s store checks when the store is in PostgreSQL: the server answers and holds a
schema this certwright reads, and whether a daemon serves it.

Reads only: the store is opened as every command opens it (which creates the tables of a
new store, as the first run would), its version and the daemon's session lock are looked
at, nothing is written.
"""
from __future__ import annotations

from collections.abc import Iterator

from certwright.engine.cli.doctor_checks import Finding
from certwright.state.urls import StoreURL


def postgres_checks(url: StoreURL) -> Iterator[Finding]:
    """The "store" and "daemon" findings of the PostgreSQL store ``url``."""
    from certwright.errors import StoreError
    from certwright.state.postgres import PostgresStore
    from certwright.state.records import WAITING
    try:
        store = PostgresStore(url.target)
    except StoreError as exc:
        yield Finding("store", "fail", str(exc).split(";")[0],
                      "check the URL (--store, CERTWRIGHT_STORE or store:), that the server "
                      "runs and that this user may log in and create tables in the schema")
        return
    try:
        (server,) = store._rows("reading", "SHOW server_version")[0]  # noqa: SLF001
        yield Finding("store", "ok", f"{store.path} answers (PostgreSQL {server}), schema "
                                     f"version {store.schema_version()}")
        pid, host = store.daemon_holder()
        if store.daemon_serves():
            yield Finding("daemon", "ok", f"a daemon (pid {pid or '?'} on {host or '?'}) "
                                          f"serves the store")
            return
        waiting = len(store.run_ids([WAITING]))
    finally:
        store.close()
    if waiting:
        yield Finding("daemon", "warn", f"no daemon serves the store, and {waiting} run(s) "
                                        f"wait for mail, a file or a deadline",
                      "start `certwright --store URL daemon`, or drive each one on with "
                      "`certwright resume RUN`")
        return
    yield Finding("daemon", "ok", "no daemon serves the store (none is needed: no run waits)")
