"""An ACME run's account and order kept in the store, so it moves to another host.

The ACME steps keep two things in files of the host that ran them: the account (its key
``account.key`` and ``account.json`` with its URL, under ``<state_dir>/acme/accounts/``)
and the run's order (``acme-order.json`` in the run's folder: the order URL, the account
it belongs to, the names, and once valid the certificate URL). A run moved to another
host (``certwright move``, a daemon that died) found neither there: its next ACME step
failed ("no ACME account ... run acme.account first"). With a store key
(``StepContext.sealing``), the steps that write them hand them to the engine with their
result, and the steps that read them get them back first:

* the account, as two ``account`` artefacts (sealed only, shared by every run and host:
  run id :data:`~certwright.state.artefacts.SHARED`, names ``account/acme/<folder>/...``),
  written back into this host's account folder (0600) when it lacks them or holds
  other bytes: every host then signs with the one account key;
* the order file, as a ``state`` artefact of the run (name ``acme-order.json``, the same
  on every host), written back into this host's folder of the run when it is missing.

Without a store key nothing is kept: the account stays on its host (a key is never kept
in clear), and so does the order, as before.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from certwright.engine.plugins.step import StepContext
from certwright.errors import PermanentError, StoreError
from certwright.state.artefacts import SHARED, Artefact
from certwright.steps.acme.client import (
    Account,
    account_folder,
    check_directory,
    load_account,
    write_private,
)

ORDER_FILE = "acme-order.json"
ACCOUNT_FILES = ("account.key", "account.json")

__all__ = ["ORDER_FILE", "account_of", "keep_account", "keep_order", "restore_account",
           "restore_account_files", "restore_order"]


def _account_name(folder: Path, file: str) -> str:
    return f"account/acme/{folder.name}/{file}"


def _kept(ctx: StepContext, name: str) -> Artefact | None:
    if ctx.artefact is None or not ctx.sealing:
        return None
    try:
        return ctx.artefact(name)
    except StoreError as exc:
        raise PermanentError(f"{ctx.step_id}: the store's copy of {name} cannot be read: "
                             f"{exc}") from exc


def account_of(ctx: StepContext, params: Mapping[str, Any], *,
               create_key: bool = False) -> Account:
    """The run's ACME account (``client.load_account``), this host's files first
    rewritten from the store's copy (:func:`restore_account`)."""
    restore_account(ctx, params)
    return load_account(ctx.state_dir, params, create_key=create_key)


def restore_account(ctx: StepContext, params: Mapping[str, Any]) -> None:
    """Rewrite this host's account files from the store's copies where the store holds
    them and this host lacks them or holds other bytes."""
    restore_account_files(ctx.state_dir, params, lambda name: _kept(ctx, name), ctx.log)


def restore_account_files(state_dir: Path, params: Mapping[str, Any],
                          find: Callable[[str], Artefact | None], log: Any) -> list[Path]:
    """:func:`restore_account` with the store's copies read by ``find`` (a name to its
    artefact, None when not kept): for a command outside a run (``revoke``)."""
    folder = account_folder(state_dir, check_directory(params), params.get("contact"))
    written = []
    for file in ACCOUNT_FILES:
        art = find(_account_name(folder, file))
        path = folder / file
        if art is None or (path.exists() and path.read_bytes() == art.data):
            continue
        write_private(path, art.data)
        log.info("acme_account_restored", file=str(path), sha256=art.sha256)
        written.append(path)
    return written


def keep_account(ctx: StepContext, account: Account) -> tuple[Artefact, ...]:
    """The account's files as ``Done.kept`` (sealed, shared), those the store does not
    hold as they are; none without a store key."""
    if ctx.artefact is None or not ctx.sealing:
        return ()
    out = []
    for file in ACCOUNT_FILES:
        path = account.folder / file
        if not path.exists():
            continue
        data, art = path.read_bytes(), _kept(ctx, _account_name(account.folder, file))
        if art is None or art.data != data:
            out.append(Artefact(run_id=SHARED, name=_account_name(account.folder, file),
                                kind="account", data=data))
    return tuple(out)


def keep_order(ctx: StepContext) -> tuple[Artefact, ...]:
    """The run's order file as ``Done.kept``; none without a store key or a file."""
    path = ctx.run_dir / ORDER_FILE
    if ctx.artefact is None or not ctx.sealing or not path.exists():
        return ()
    return (Artefact(run_id=ctx.run_id, name=ORDER_FILE, kind="state",
                     data=path.read_bytes(), rel=ORDER_FILE),)


def restore_order(ctx: StepContext) -> None:
    """Put the run's order file back in this host's folder of the run when it is missing
    and the store holds it."""
    path = ctx.run_dir / ORDER_FILE
    if path.exists():
        return
    art = _kept(ctx, ORDER_FILE)
    if art is not None:
        write_private(path, art.data)
        ctx.log.info("artefact_restored", name=ORDER_FILE, to=str(path), kind="state",
                     sha256=art.sha256)
