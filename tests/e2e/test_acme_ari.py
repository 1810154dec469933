"""certwright's own ACME client and daemon follow the CA's renewal window (RFC 9773),
against the built-in CA's ACME server over real HTTP on loopback: the window read at
issuance and kept in the inventory; the daemon, its clock moved past the next check and
into a window the operator set, reads the window again and renews inside it, sending
``replaces``; the old certificate is recorded as replaced; a refused ``replaces`` is
retried without it."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import FakeClock, format_instant, parse_instant
from certwright.state.records import CertificateRecord
from certwright.steps.inventory import renewal_instant
from tests.e2e.test_acme_cli import cli
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
NAME = "ari.acme.test"


@pytest.fixture
def clock() -> FakeClock:
    """The CA's clock: it moves only when a test says (a renewal is issued later)."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int,
       clock: FakeClock) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink, http01_port=peer_port, clock=clock)


def run_args(ca: AcmeCA, tmp: Path, run_id: str) -> list[str]:
    (tmp / "certs").mkdir(exist_ok=True)
    values = {"domain": NAME, "directory": ca.directory, "allow_insecure": "true",
              "contact": "admin@acme.test", "http_address": f"127.0.0.1:{ca.http01_port}",
              "cert_dir": str(tmp / "certs" / NAME)}
    return ["run", "acme", "--run-id", run_id,
            *[a for k, v in values.items() for a in ("--set", f"{k}={v}")]]


def certificate(state: Path) -> dict[str, Any]:
    done = cli(state, "certificates", NAME, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(done.stdout)["certificates"]
    return rows[0]


def ca_orders(ca: AcmeCA) -> list[tuple[str | None, str | None]]:
    with sqlite3.connect(next(ca.server.ca_dir.glob("*.sqlite*"))) as db:
        return list(db.execute("SELECT replaces, serial FROM acme_orders ORDER BY created_at"))


def set_window(ca: AcmeCA, serial: str, start: str, end: str) -> None:
    done = subprocess.run([sys.executable, "-m", "certwright", "ca", "renewal-window",
                           serial, "--dir", str(ca.server.ca_dir), "--start", start,
                           "--end", end],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_issuance_reads_and_keeps_the_window(ca: AcmeCA, tmp_path: Path) -> None:
    """After `run acme` the inventory's `ari` holds the CA's window (the last third of the
    lifetime), the certID, and the next check the CA's Retry-After gave; `certificates`
    shows the window beside the next renewal, which lies inside it."""
    state = tmp_path / "state"
    done = cli(state, *run_args(ca, tmp_path, "first"))
    assert done.returncode == 0, done.stderr[-3000:]
    row = certificate(state)
    ari = row["ari"]
    start, end = (parse_instant(ari["suggestedWindow"][k]) for k in ("start", "end"))
    born, dies = parse_instant(row["not_before"]), parse_instant(row["not_after"])
    assert born + (dies - born) * 2 / 3 <= start < end <= dies
    assert start <= parse_instant(row["next_renewal"]) <= end
    checked = parse_instant(ari["checked"])
    assert parse_instant(ari["next_check"]) - checked == timedelta(hours=6)
    assert ari["url"].endswith("/" + ari["cert_id"])
    table = cli(state, "certificates")
    assert f"(ARI window {ari['suggestedWindow']['start'][:10]}\u2013" in table.stdout


def test_the_daemon_renews_inside_a_moved_window_with_replaces(
        ca: AcmeCA, clock: FakeClock, tmp_path: Path) -> None:
    """The operator moves the window to just after the next check; the daemon, its clock
    set inside that window, reads it again, renews, and sends `replaces`: the CA's order
    records the old certID, and the new record names the serial it replaced."""
    from tests.fixtures.daemon.harness import env_for, spawn, wait_for
    state = tmp_path / "state"
    done = cli(state, *run_args(ca, tmp_path, "first"))
    assert done.returncode == 0, done.stderr[-3000:]
    old = certificate(state)
    check = parse_instant(old["ari"]["next_check"])
    start, end = check + timedelta(hours=1), check + timedelta(hours=3)
    set_window(ca, old["serial"], format_instant(start), format_instant(end))
    moved = CertificateRecord(name=NAME, run_id="first", serial=old["serial"],
                              fingerprint_sha256=old["fingerprint_sha256"],
                              ari={"suggestedWindow": {"start": format_instant(start),
                                                       "end": format_instant(end)}})
    due = renewal_instant(moved)
    assert due is not None
    now = due + min(timedelta(minutes=1), (end - due) / 2)
    clock.advance(minutes=1)  # the renewal is issued later than the certificate it renews
    config = tmp_path / "daemon.yaml"
    config.write_text("daemon: {renew_check: 1s}\n")
    proc = spawn(["--state-dir", str(state), "--log-json", "daemon", "--config", str(config)],
                 env_for(state, {"CERTWRIGHT_NOW": format_instant(now)}),
                 tmp_path / "daemon.log")
    try:
        wait_for(lambda: certificate(state)["serial"] != old["serial"]
                 or proc.popen.poll() is not None, 120, "the renewal to install")
        events = proc.events()
    finally:
        assert proc.stop() == 0, proc.text()[-3000:]
    checked = [e for e in events if e.get("event") == "ari_checked"]
    assert checked, proc.text()[-3000:]
    assert checked[0]["start"] == format_instant(start)
    started = next(e for e in events if e.get("event") == "renewal_started")
    assert started["renews"] == "first"
    new = certificate(state)
    assert new["serial"] != old["serial"]
    assert new["ari"]["replaces"] == {"cert_id": old["ari"]["cert_id"],
                                      "serial": old["serial"], "accepted": True}
    assert [r for r, _ in ca_orders(ca)] == [None, old["ari"]["cert_id"]]


def test_a_refused_replaces_is_retried_without(ca: AcmeCA, clock: FakeClock,
                                               tmp_path: Path) -> None:
    """A certificate another order already replaced: the renewal's newOrder with
    `replaces` is refused (alreadyReplaced), so the client logs it and orders once more
    without; the renewal installs and its record says the CA refused replaces."""
    state = tmp_path / "state"
    done = cli(state, *run_args(ca, tmp_path, "first"))
    assert done.returncode == 0, done.stderr[-3000:]
    old = certificate(state)
    other = run_args(ca, tmp_path, "other")
    other[other.index(f"cert_dir={tmp_path / 'certs' / NAME}")] = \
        f"cert_dir={tmp_path / 'certs' / 'other'}"
    taken = cli(state, *other, "--name", "other", "--set", f"replaces={old['ari']['cert_id']}")
    assert taken.returncode == 0, taken.stderr[-3000:]
    clock.advance(minutes=1)
    renewed = cli(state, "renew", NAME, "--force", "-v")
    assert renewed.returncode == 0, renewed.stderr[-3000:]
    assert "acme_replaces_refused" in renewed.stderr
    assert "alreadyReplaced" in renewed.stderr
    new = certificate(state)
    assert new["serial"] != old["serial"]
    assert new["ari"]["replaces"] == {"cert_id": old["ari"]["cert_id"],
                                      "serial": old["serial"], "accepted": False}
    assert [r for r, _ in ca_orders(ca)] == [None, old["ari"]["cert_id"], None]
    table = cli(state, "certificates", NAME)
    assert f"replaced serial {old['serial']} (the CA refused replaces" in table.stdout
