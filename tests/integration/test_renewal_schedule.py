"""The daemon's renewal schedule works from the inventory: one row per certificate name,
its back-off in the store, an ARI window that replaces the computed instant, and an old
``renewals.sqlite3`` ignored with a log line."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from certwright.clock import FakeClock, format_instant
from certwright.engine.daemon.renew import Renewer, renewals_status
from certwright.engine.testing import load_text
from certwright.state.records import FAILED, SUCCEEDED, CertificateRecord, RunRecord
from certwright.state.sqlite import SQLiteStore
from certwright.steps.inventory import renewal_instant

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SPEC = load_text("""
pipeline: p
version: 1
inputs:
  domain: {type: hostname, required: true}
  cert_name: {type: string}
  token: {type: string, secret: true}
initial: a
states:
  a: {run: [noop], next: done}
  done: {final: success}
""")


def _cert(name: str, run_id: str, renew_at: datetime, **fields: Any) -> CertificateRecord:
    return CertificateRecord(
        name=name, run_id=run_id, pipeline="p", names=[name], serial="1f",
        not_before=format_instant(renew_at - timedelta(days=60)),
        not_after=format_instant(renew_at + timedelta(days=30)),
        paths={"cert": f"/live/{name}/server.crt"}, inputs={"domain": name, "token": "<secret>"},
        renew_at=format_instant(renew_at), **fields)


@pytest.fixture
def world(tmp_path: Path):
    store = SQLiteStore(tmp_path / "certwright.sqlite")
    started: list[tuple[str, dict[str, Any], str, list[str], str | None]] = []

    def start(spec: Any, values: dict[str, Any], run_id: str, secret: list[str],
              host: str | None = None) -> str:
        started.append((spec.name, values, run_id, secret, host))
        _put(store, RunRecord(id=run_id, pipeline=spec.name, spec_hash="h"))  # running
        return run_id
    clock = FakeClock(NOW)
    renewer = Renewer(tmp_path, store, clock, lambda _name: SPEC, start, retry=3600,
                      retry_cap=86400)
    yield store, renewer, started, clock
    renewer.close()
    store.close()


def _put(store: SQLiteStore, *items: Any) -> None:
    with store.transaction() as tx:
        for item in items:
            if isinstance(item, CertificateRecord):
                tx.put_certificate(item)
            else:
                tx.put_run(item)


def test_an_ari_window_replaces_the_computed_instant():
    rec = _cert("a.test", "r1", NOW + timedelta(days=10))
    assert renewal_instant(rec) == NOW + timedelta(days=10)
    start, end = NOW + timedelta(days=2), NOW + timedelta(days=3)
    rec.ari = {"suggestedWindow": {"start": format_instant(start), "end": format_instant(end)}}
    chosen = renewal_instant(rec)
    assert chosen is not None and start <= chosen < end
    assert renewal_instant(rec) == chosen  # the same instant on every read
    rec.ari = {"suggestedWindow": {"start": "garbage"}}  # unusable: the computed instant
    assert renewal_instant(rec) == NOW + timedelta(days=10)


def test_one_row_per_certificate_name_from_the_inventory(world, tmp_path):
    store, renewer, started, _ = world
    _put(store, _cert("a.test", "r1", NOW + timedelta(days=5)),
         _cert("b.test", "r2", NOW + timedelta(days=9)))
    assert renewer.check() == [] and started == []
    rows = renewals_status(tmp_path)
    assert [(r["name"], r["status"], r["run_id"]) for r in rows] == [
        ("a.test", "scheduled", "r1"), ("b.test", "scheduled", "r2")]
    assert rows[0]["next_at"] == format_instant(NOW + timedelta(days=5))
    assert renewer.next_due() == NOW + timedelta(days=5)  # as the last check saw it


def test_a_due_certificate_is_renewed_once_then_backs_off_then_succeeds(world, tmp_path):
    store, renewer, started, clock = world
    old = RunRecord(id="r1", pipeline="p", spec_hash="h", status=SUCCEEDED,
                    inputs={"domain": "a.test", "token": "<secret>"})
    _put(store, old, _cert("a.test", "r1", NOW - timedelta(hours=1)))
    with store.transaction() as tx:
        tx.put_secrets("r1", {"inputs": {"token": "s3cret"}, "outputs": {}})
    [new_id] = renewer.check()
    assert started[0][1] == {"domain": "a.test", "cert_name": "a.test", "token": "s3cret"}
    assert started[0][3] == ["token"]
    assert renewer.check() == []  # in flight: never twice
    assert renewals_status(tmp_path)[0]["status"] == "renewing"
    _put(store, RunRecord(id=new_id, pipeline="p", spec_hash="h", status=FAILED,
                          error="ca.sign: refused"))
    assert renewer.next_due() == clock.now()  # a finished renewal is settled at once
    assert renewer.check() == []
    row = renewals_status(tmp_path)[0]
    assert (row["status"], row["attempts"]) == ("backoff", 1)
    assert "ca.sign: refused" in row["last_error"]
    assert row["next_at"] == format_instant(NOW + timedelta(hours=1))
    clock.advance(hours=1)
    [second] = renewer.check()
    _put(store, RunRecord(id=second, pipeline="p", spec_hash="h", status=SUCCEEDED),
         _cert("a.test", second, NOW + timedelta(days=60)))
    assert renewer.check() == []
    row = renewals_status(tmp_path)[0]
    assert (row["status"], row["attempts"], row["run_id"]) == ("scheduled", 0, second)
    assert store.list_renewals() == []


def test_a_renewal_keeps_the_host_of_the_run_it_renews(world, tmp_path):
    """Its key and install steps run where the certificate is installed, whichever
    daemon starts the renewal; a run made before hosts existed renews with none."""
    store, renewer, started, _ = world
    _put(store, RunRecord(id="r1", pipeline="p", spec_hash="h", status=SUCCEEDED,
                          inputs={"domain": "a.test"}, host="web1"),
         RunRecord(id="r2", pipeline="p", spec_hash="h", status=SUCCEEDED,
                   inputs={"domain": "b.test"}),
         _cert("a.test", "r1", NOW - timedelta(hours=1)),
         _cert("b.test", "r2", NOW - timedelta(hours=1)))
    renewer.check()
    assert sorted((s[1]["domain"], s[4]) for s in started) == [("a.test", "web1"),
                                                               ("b.test", None)]


def test_a_claimed_run_that_never_came_fails_only_after_a_grace(world, tmp_path):
    """`renew` claims, then starts the run in its next transaction: a check in between
    must not count it failed; a crash between the two does, once the grace is over."""
    from certwright.engine.daemon.renew import claim
    store, renewer, _, clock = world
    _put(store, _cert("a.test", "r1", NOW + timedelta(days=5)))
    assert claim(store, "a.test", "ghost", "r1", NOW)
    assert not claim(store, "a.test", "other", "r1", NOW)  # one in flight at a time
    assert renewer.check() == [] and renewals_status(tmp_path)[0]["status"] == "renewing"
    clock.advance(minutes=11)
    renewer.check()
    row = renewals_status(tmp_path)[0]
    assert (row["status"], row["attempts"]) == ("backoff", 1)
    assert "ghost was never started" in row["last_error"]


def test_an_old_renewals_file_is_ignored_with_a_log_line(tmp_path):
    old = sqlite3.connect(tmp_path / "renewals.sqlite3")
    old.execute("CREATE TABLE renewals (cert_path TEXT PRIMARY KEY, status TEXT)")
    old.execute("INSERT INTO renewals VALUES ('/old/server.crt', 'scheduled')")
    old.commit()
    old.close()
    store = SQLiteStore(tmp_path / "certwright.sqlite")
    with capture_logs() as logs:
        renewer = Renewer(tmp_path, store, FakeClock(NOW), lambda _n: SPEC, lambda *a: "x")
    try:
        assert renewer.check() == []
    finally:
        renewer.close()
        store.close()
    assert any(e["event"] == "renewals_file_ignored" for e in logs)
    assert renewals_status(tmp_path) == []
    assert (tmp_path / "renewals.sqlite3").exists()  # left as it was: nothing lost
