"""The inventory's projection from runs: what a crash between a run's last commit and the
inventory hook would leave out is still found, and an older run never hides a newer one."""
from __future__ import annotations

from certwright.state.records import SUCCEEDED, RunRecord
from certwright.state.sqlite import SQLiteStore
from certwright.steps.inventory import pending_records, record, records_of

AT = "2026-01-01T00:00:00Z"


def _run(rid: str, serial: str, not_before: str) -> RunRecord:
    outputs = {"name": "example.test", "names": ["example.test"], "serial": serial,
               "cert_path": "/live/example.test/server.crt",
               "key_path": "/live/example.test/server.key", "fingerprint_sha256": serial * 4,
               "not_before": not_before, "not_after": "2026-07-01T00:00:00Z",
               "dir": "/live/example.test", "issuer": "CN=CA"}
    return RunRecord(id=rid, pipeline="cacert", spec_hash="0" * 64, state="installed",
                     status=SUCCEEDED, inputs={"ca": "https://ca.test", "domain": "example.test"},
                     vars={"install_files": outputs}, created=AT, updated=AT)


def test_a_succeeded_run_the_inventory_lacks_is_pending_then_recorded(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    with store.transaction() as tx:
        tx.put_run(_run("r1", "aa", AT))
    pending = pending_records(store)
    assert [(p.name, p.run_id, p.issuer) for p in pending] == [("example.test", "r1",
                                                                 "https://ca.test")]
    assert pending[0].renew_at is not None and AT < pending[0].renew_at < "2026-07-01"
    assert record(store, pending) == ["example.test"]
    assert pending_records(store) == []
    store.close()


def test_an_older_run_never_replaces_a_newer_certificate(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    new = records_of(_run("r2", "bb", "2026-02-01T00:00:00Z"))
    old = records_of(_run("r1", "aa", AT))
    assert record(store, new) == ["example.test"]
    assert record(store, old) == []
    found = store.find_certificate("example.test")
    assert found is not None and found.serial == "bb"
    store.close()


def test_a_renewal_issued_in_the_same_second_replaces_by_the_run_that_ended_later(tmp_path):
    """Both certificates have the same not_before (a CA answers within one second, or the
    test CA's clock stands still): the run that ended later is the renewal, whatever its
    id sorts like (`acme-2026...` sorts before `first`)."""
    import dataclasses
    store = SQLiteStore(tmp_path / "s.sqlite")
    first = records_of(dataclasses.replace(_run("first", "aa", AT), updated=AT))
    later = records_of(dataclasses.replace(_run("acme-20260101-x", "bb", AT),
                                           updated="2026-01-01T00:00:05Z"))
    assert record(store, first) == ["example.test"]
    assert record(store, later) == ["example.test"]
    assert record(store, first) == []  # a late hook of the first run hides nothing
    found = store.find_certificate("example.test")
    assert found is not None and found.serial == "bb"
    store.close()


def test_a_run_that_installed_no_certificate_opens_no_transaction(tmp_path):
    """record of no records (a succeeded run with no certificate among its outputs, as a
    pipeline of other work has) writes nothing and does not even take the write lock."""
    class NoWrites(SQLiteStore):
        def transaction(self):  # type: ignore[override]
            raise AssertionError("a transaction for nothing")

    store = NoWrites(tmp_path / "s.sqlite")
    plain = RunRecord(id="r1", pipeline="five", spec_hash="0" * 64, state="s5",
                      status=SUCCEEDED, created=AT, updated=AT)
    assert records_of(plain) == [] and record(store, records_of(plain)) == []
    store.close()
