"""The store a command works on: ``--store URL``, else ``CERTWRIGHT_STORE``, else the
configuration file's ``store:``, else the SQLite file in ``--state-dir``; and its key
(``state.sealing``): ``--store-key FILE``, else ``CERTWRIGHT_STORE_KEY``, else the
configuration's ``store_key:``, else none.

Kept apart from the commands that drive runs so that the ones that only read (``status``,
``history``, ``certificates``) import no more than the store itself; a PostgreSQL driver
is imported only when a PostgreSQL store is opened. A bad URL is an InputError (exit 2)
naming where it came from.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from certwright.errors import CertwrightError, RunLocked
from certwright.state.base import Store
from certwright.state.location import open_store
from certwright.state.opening import Connect
from certwright.state.urls import StoreURL, parse_store_url

if TYPE_CHECKING:
    from certwright.state.sealing import Sealer

STORE_ENV = "CERTWRIGHT_STORE"
KEY_ENV = "CERTWRIGHT_STORE_KEY"  # as state.sealing.KEY_ENV (not imported: start-up time)


def store_url_of(args: argparse.Namespace) -> StoreURL | None:
    """The store URL the command line, environment or configuration names, parsed once
    (None: the SQLite file in the state folder). InputError for a bad one."""
    if hasattr(args, "store_url"):
        return args.store_url  # type: ignore[no-any-return]
    found: StoreURL | None = None
    given = getattr(args, "store", None)
    if given:
        found = parse_store_url(given, "--store")
    elif os.environ.get(STORE_ENV):
        found = parse_store_url(os.environ[STORE_ENV], STORE_ENV)
    else:
        from certwright.engine.model.configpaths import config_paths
        if any(p.exists() for p in config_paths(getattr(args, "config", None))):
            from certwright.engine.model.configfile import Config
            setting = Config.load(getattr(args, "config", None)).store()
            if setting is not None:
                found = parse_store_url(str(setting.value), f"store ({setting.origin})")
    args.store_url = found
    return found


def store_key_of(args: argparse.Namespace) -> Sealer | None:
    """The store key the command line, environment or configuration names, loaded once
    (None: no key). InputError naming where it came from when the file is missing, open to
    group or others, or holds no key."""
    if hasattr(args, "store_sealer"):
        return args.store_sealer  # type: ignore[no-any-return]
    path, origin = getattr(args, "store_key", None), "--store-key"
    if not path and os.environ.get(KEY_ENV):
        path, origin = os.environ[KEY_ENV], KEY_ENV
    if not path:
        from certwright.engine.model.configpaths import config_paths
        if any(p.exists() for p in config_paths(getattr(args, "config", None))):
            from certwright.engine.model.configfile import Config
            setting = Config.load(getattr(args, "config", None)).store_key()
            if setting is not None:
                path, origin = setting.value, f"store_key ({setting.origin})"
    found = None
    if path:
        from certwright.state.sealing import load_key_file
        found = load_key_file(Path(path), origin)
    args.store_sealer = found
    return found


def store_exists(args: argparse.Namespace) -> bool:
    """Whether there is a store to read: a PostgreSQL one always is (it is made on first
    use), a SQLite one when its file is there (``status`` in an empty folder creates
    nothing)."""
    from certwright.state import names as N
    url = store_url_of(args)
    if url is None:
        return (Path(args.state_dir) / N.DB_FILE).exists()
    return url.kind != "sqlite" or url.path.exists()


def open_store_of(args: argparse.Namespace, *, readonly: bool = False) -> Store:
    """The store of the command (see the module); ``readonly`` for commands that only read
    (they then work on a read-only or full file system). StoreFault when it cannot be
    opened, InputError when its URL is bad."""
    connect: Connect = sqlite3.connect
    flag = os.environ.get("CERTWRIGHT_IO_ERROR_WHILE")  # fault-injection hook (tests)
    if flag:
        from certwright.engine.testing import FailingIO
        connect = FailingIO(Path(flag)).connect
    return open_store(args.state_dir, readonly=readonly, connect=connect,
                      url=store_url_of(args), sealer=store_key_of(args))


def refuse_if_served_elsewhere(args: argparse.Namespace) -> None:
    """:class:`ServedElsewhere` (exit 4) when a daemon serves the command's PostgreSQL store
    from another state folder or host. Its run locks are files of its own folder, so a run
    this command drove could be driven by that daemon at the same moment; one daemon with
    this folder (or none) is safe. Daemons share a store under leases; a foreground run
    has no lease, so it is refused beside them."""
    url = store_url_of(args)
    if url is None or url.kind != "postgresql":
        return
    from certwright.state.locks import daemon_lock
    if daemon_lock(args.state_dir).holder():
        return  # the daemon serves this folder: the run locks exclude it (see commands)
    from certwright.state.postgres import PostgresStore
    store = PostgresStore(url.target)
    try:
        if store.daemon_serves():
            pid, host = store.daemon_holder()
            raise ServedElsewhere(store.path, Path(args.state_dir), host, pid)
    finally:
        store.close()


class ServedElsewhere(RunLocked):
    """A daemon serves the store from another state folder or host (exit 4)."""

    def __init__(self, where: str, state_dir: Path, host: str | None, pid: int | None) -> None:
        CertwrightError.__init__(
            self, f"a daemon (pid {pid or '?'} on {host or 'another host'}) serves the "
                  f"PostgreSQL store {where} with another state folder than {state_dir}: "
                  f"start and resume its runs where it runs (with --state-dir of its own), "
                  f"or start a daemon in this folder too (daemons share a store), or stop "
                  f"it first")
        self.pid = pid
