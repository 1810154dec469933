"""The store contract for the certificate inventory, as tests (see ``state.contract``).

A back-end subclasses :class:`CertificateContract` beside ``StoreContract`` with the same
``make_store``. It checks that a certificate record round-trips every field, that putting
one name again replaces its record, that the inventory lists by name, that missing names
are None, that a rolled-back transaction leaves no record, and that an older store (before
the inventory) reads as an empty inventory once opened.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from certwright.state.base import Store
from certwright.state.contract import AT, Boom, opened, raises
from certwright.state.records import REVOKED, CertificateRecord


def certificate(name: str, run_id: str = "r1", **fields: object) -> CertificateRecord:
    """A certificate record with every field set (``fields`` override)."""
    values: dict[str, object] = {
        "pipeline": "contract", "names": [name, f"www.{name}"],
        "issuer": "https://ca.example.test", "issuer_dn": "CN=Contract CA", "serial": "1f2e",
        "fingerprint_sha256": "ab" * 32, "not_before": AT, "not_after": "2026-07-01T00:00:00Z",
        "dir": f"/live/{name}",
        "paths": {"cert": f"/live/{name}/server.crt", "key": f"/live/{name}/server.key"},
        "inputs": {"domain": name, "n": 3, "flag": True}, "renew_at": "2026-05-01T00:00:00Z",
        "ari": {"start": AT, "end": AT}, "updated": AT}
    values.update(fields)
    return CertificateRecord(name=name, run_id=run_id, **values)  # type: ignore[arg-type]


class CertificateContract:
    """The inventory's promises; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def _opened(self, tmp_path: Path) -> AbstractContextManager[Store]:
        return opened(self.make_store, tmp_path / "store")

    def test_a_certificate_round_trips_every_field(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            put = certificate("example.test")
            with store.transaction() as tx:
                tx.put_certificate(put)
            assert store.find_certificate("example.test") == put

    def test_put_certificate_replaces_the_record_of_its_name(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_certificate(certificate("example.test"))
            newer = certificate("example.test", run_id="r2", serial="99", status=REVOKED,
                                renew_at=None, ari=None)
            with store.transaction() as tx:
                tx.put_certificate(newer)
            assert store.find_certificate("example.test") == newer
            assert store.list_certificates() == [newer]

    def test_the_inventory_lists_by_name_and_missing_names_are_none(
            self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            assert store.list_certificates() == []
            assert store.find_certificate("nothing.test") is None
            with store.transaction() as tx:
                for name in ("b.test", "a.test", "c.test"):
                    tx.put_certificate(certificate(name))
            assert [c.name for c in store.list_certificates()] == ["a.test", "b.test", "c.test"]

    def test_a_rolled_back_put_leaves_no_record(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    tx.put_certificate(certificate("example.test"))
                    raise Boom
            raises(Boom, fail)
            assert store.find_certificate("example.test") is None

    def test_a_revocation_round_trips_and_a_record_without_one_reads_none(
            self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_certificate(certificate("a.test"))
            plain = store.find_certificate("a.test")
            assert plain is not None and plain.revoked_at is None
            assert plain.revoke_reason is None
            revoked = certificate("a.test", status=REVOKED, revoked_at=AT,
                                  revoke_reason="keyCompromise", renew_at=None)
            with store.transaction() as tx:
                tx.put_certificate(revoked)
            assert store.find_certificate("a.test") == revoked

    def test_a_store_reopened_keeps_the_inventory(self, tmp_path: Path) -> None:
        make: Callable[[Path], Store] = self.make_store
        with opened(make, tmp_path / "store") as store, store.transaction() as tx:
            tx.put_certificate(certificate("example.test"))
        with opened(make, tmp_path / "store") as store:
            assert store.find_certificate("example.test") == certificate("example.test")
