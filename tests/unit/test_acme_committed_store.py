"""The ACME tables read as committed (CommittedAcmeStore, the reads the ACME server
answers on its event loop): every read of the writer's store, the committed state only,
and NeedsWriter for anything that would write, so the work is done again by the writer."""
from __future__ import annotations

from pathlib import Path

import pytest

from certwright.ca.acme.store import AcmeStore, CommittedAcmeStore, NeedsWriter
from certwright.ca.store import CAStore


@pytest.fixture
def stores(tmp_path: Path) -> tuple[AcmeStore, CommittedAcmeStore]:
    ca = CAStore(tmp_path / "ca.sqlite3")
    return AcmeStore(ca), CommittedAcmeStore(ca)


def test_reads_see_what_the_writer_committed(
        stores: tuple[AcmeStore, CommittedAcmeStore]) -> None:
    writer, committed = stores
    account = writer.create_account("thumb", {"kty": "EC"}, ["mailto:a@example.test"])
    authz = writer.create_authz(account["id"], "www.example.test", False,
                                "2030-01-01T00:00:00Z", ["http-01", "dns-01"])
    order = writer.create_order(account["id"], [{"type": "dns",
                                                 "value": "www.example.test"}],
                                [authz], "2030-01-01T00:00:00Z", None)
    assert committed.find_account(account_id=account["id"]) == account
    assert committed.find_order(order) == writer.find_order(order)
    assert [a["id"] for a in committed.order_authz(order)] == [authz]
    assert [c["type"] for c in committed.challenges(authz)] == ["dns-01", "http-01"]
    assert committed.account_orders(account["id"]) == [{"id": order, "status": "pending"}]


def test_uncommitted_writes_are_not_seen(stores: tuple[AcmeStore, CommittedAcmeStore]) -> None:
    writer, committed = stores
    account = writer.create_account("thumb", {"kty": "EC"}, [])
    with writer.transaction():
        writer.update_account(account["id"], status="deactivated")
        assert writer.find_account(thumbprint="thumb")["status"] == "deactivated"
        assert committed.find_account(account_id=account["id"])["status"] == "valid"
    assert committed.find_account(account_id=account["id"])["status"] == "deactivated"


@pytest.mark.parametrize("write", [
    lambda s: s.set_order("o", "ready"),
    lambda s: s.update_account("a", status="deactivated"),
    lambda s: s.create_account("t", {}, []),
    lambda s: s.create_authz("a", "x.test", False, "2030-01-01T00:00:00Z", ["dns-01"]),
    lambda s: s.transaction(),
])
def test_every_write_raises_needs_writer(stores: tuple[AcmeStore, CommittedAcmeStore],
                                         write: object) -> None:
    _, committed = stores
    with pytest.raises(NeedsWriter):
        write(committed)  # type: ignore[operator]
