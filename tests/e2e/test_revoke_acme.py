"""``certwright revoke`` of a certificate from a real Pebble (RFC 8555 revokeCert), checked
through Pebble's management interface (Pebble 2.4 serves no CRL): its
``/cert-status-by-serial/<hex>`` says Revoked with the RFC 5280 reason code."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.state.sqlite import SQLiteStore
from tests.e2e.test_acme_cli import run_args
from tests.e2e.test_revoke_cli import cli, ok, row
from tests.integration.test_acme import Env, _start

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def pebble_status(env: Env, serial: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(
        env.pebble.get(f"{env.pebble.management}/cert-status-by-serial/{serial}"))
    return status


def test_revoke_with_the_account_key_and_the_reason_code(env: Env) -> None:
    ok(cli(env.tmp, *run_args(env, "www.acme.test", "a1")))
    serial = row(env.tmp, "www.acme.test")["serial"]
    assert pebble_status(env, serial)["Status"] == "Valid"
    out = ok(cli(env.tmp, "revoke", "www.acme.test", "--reason", "superseded"))
    assert "signed with the account" in out and f"serial {serial}" in out
    status = pebble_status(env, serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 4
    shown = row(env.tmp, "www.acme.test")
    assert shown["state"] == "revoked" and shown["revoke_reason"] == "superseded"
    again = ok(cli(env.tmp, "revoke", "www.acme.test"))
    assert "already revoked on" in again and "(superseded)" in again
    # the inventory lost it (an older backup put back): the CA's alreadyRevoked is success
    store = SQLiteStore(env.tmp / "state" / "certwright.sqlite")
    try:
        rec = store.find_certificate("www.acme.test")
        assert rec is not None
        with store.transaction() as tx:
            tx.put_certificate(dataclasses.replace(rec, status="installed", revoked_at=None,
                                                   revoke_reason=None))
    finally:
        store.close()
    told = ok(cli(env.tmp, "revoke", "www.acme.test"))
    assert "was revoked already" in told and "does not say when or why" in told
    assert row(env.tmp, "www.acme.test")["state"] == "revoked"


def test_key_compromise_is_signed_with_the_certificates_key(env: Env) -> None:
    ok(cli(env.tmp, *run_args(env, "key.acme.test", "k1")))
    serial = row(env.tmp, "key.acme.test")["serial"]
    out = ok(cli(env.tmp, "revoke", "key.acme.test", "--reason", "key-compromise"))
    assert "signed with the certificate's key" in out
    status = pebble_status(env, serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 1
    key = Path(row(env.tmp, "key.acme.test")["paths"]["key"])
    assert key.with_name(key.name + ".compromised.txt").exists()


def test_without_the_account_the_certificates_key_signs(env: Env) -> None:
    """The account folder gone (another machine made the account): RFC 8555 lets the
    holder of the certificate's key revoke it."""
    ok(cli(env.tmp, *run_args(env, "lone.acme.test", "l1")))
    serial = row(env.tmp, "lone.acme.test")["serial"]
    for path in (env.tmp / "state" / "acme" / "accounts").glob("*/account.json"):
        path.unlink()
    out = ok(cli(env.tmp, "revoke", "lone.acme.test", "--reason", "cessationOfOperation"))
    assert "signed with the certificate's key" in out
    status = pebble_status(env, serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 5
