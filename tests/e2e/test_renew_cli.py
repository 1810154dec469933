"""`certwright renew`: what is due (or what is named, with --force) is renewed by the
pipeline that made it, into the same folder; a daemon serving the store is handed the runs.

The built-in CA and mail server run embedded, over real HTTP and SMTP on loopback; the CLI
runs as a user runs it (subprocesses, a clean state folder and certificates root).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certwright.clock import format_instant
from tests.fixtures.daemon.harness import spawn, wait_for

NAME = "a.example.test"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state"),
           "CERTWRIGHT_LIVE_DIR": str(tmp_path / "live"), "PYTHONUNBUFFERED": "1"}
    env.pop("CERTWRIGHT_NOW", None)
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "certwright", *args],
                          env=_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=180, check=False, stdin=subprocess.DEVNULL)


def _serial(path: Path) -> str:
    return format(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, "x")


def _inventory(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "state" / "certwright.sqlite") as db:
        return [(r[0], json.loads(r[1])["serial"]) for r in
                db.execute("SELECT name, body FROM certificates ORDER BY name")]


def _runs(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "state" / "certwright.sqlite") as db:
        return [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id")]


@pytest.fixture
def issued(tmp_path: Path) -> Path:
    """One certificate, NAME, installed by a cacert run on the embedded CA."""
    done = _cli(tmp_path, "run", "cacert", "-d", NAME, "--run-id", "first")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "live" / NAME


def test_renew_force_installs_a_new_serial_into_the_same_folder_and_keeps_the_old(
        tmp_path, issued):
    old = _serial(issued / "server.crt")
    done = _cli(tmp_path, "renew", NAME, "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"renewing {NAME}: forced (pipeline cacert, renews run first)" in done.stdout
    new = _serial(issued / "server.crt")
    assert new != old
    assert f"{NAME}: renewed, serial {new}" in done.stdout, done.stdout
    versions = issued / ".certwright" / "versions"
    kept = list(versions.rglob("server.crt")) if versions.exists() else []
    assert [_serial(p) for p in kept] == [old]
    assert not (tmp_path / "live" / f"{NAME}-0001").exists()
    assert _inventory(tmp_path) == [(NAME, new)]
    status = _cli(tmp_path, "certificates", "--json")
    assert json.loads(status.stdout)["certificates"][0]["serial"] == new


def test_renew_with_nothing_due_does_nothing_and_says_so(tmp_path, issued):
    before = _runs(tmp_path)
    done = _cli(tmp_path, "renew")
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(_cli(tmp_path, "certificates", "--json").stdout)["certificates"][0]
    assert (f"no certificate is due for renewal; the next is {NAME} on "
            f"{shown['next_renewal'][:10]}") in done.stdout, done.stdout
    assert _runs(tmp_path) == before


def test_a_due_certificate_is_renewed_and_an_unknown_name_is_refused(tmp_path, issued):
    """Due: its renewal instant is in the past (set in the inventory: moving the clock
    months on would move the embedded CA's too, whose policy then shortens lifetimes)."""
    old = _serial(issued / "server.crt")
    past = format_instant(datetime.now(UTC) - timedelta(days=1))
    with sqlite3.connect(tmp_path / "state" / "certwright.sqlite") as db:
        db.execute("UPDATE certificates SET renew_at=?", (past,))
    done = _cli(tmp_path, "renew")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"renewing {NAME}: due since {past[:10]} " in done.stdout
    assert _serial(issued / "server.crt") != old
    unknown = _cli(tmp_path, "renew", "nope.example.test", "--force")
    assert unknown.returncode == 2
    assert "unknown certificate 'nope.example.test' (known: a.example.test)" in unknown.stderr


def test_renew_while_a_daemon_serves_the_store_hands_it_the_runs(tmp_path, issued):
    old = _serial(issued / "server.crt")
    daemon = spawn(["--log-json", "daemon", "--embedded"], _env(tmp_path),
                   tmp_path / "daemon.log")
    try:
        wait_for(lambda: "daemon_ready" in daemon.text() or daemon.popen.poll() is not None,
                 60, "the daemon to be ready")
        assert daemon.popen.poll() is None, daemon.text()[-3000:]
        done = _cli(tmp_path, "renew", "--force")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "handed to the daemon (pid" in done.stdout, done.stdout
        wait_for(lambda: _inventory(tmp_path)[0][1] != old, 90,
                 "the daemon to renew the certificate")
        assert _serial(issued / "server.crt") == _inventory(tmp_path)[0][1]
        wait_for(lambda: "renewal_succeeded" in daemon.text(), 30, "the daemon to settle it")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_the_daemon_renews_a_due_certificate_from_the_inventory_one_row_per_name(
        tmp_path, issued):
    second = _cli(tmp_path, "run", "cacert", "-d", "b.example.test", "-d",
                  "www.b.example.test", "--run-id", "second")
    assert second.returncode == 0, second.stderr[-3000:]
    old = dict(_inventory(tmp_path))
    past = format_instant(datetime.now(UTC) - timedelta(hours=1))
    with sqlite3.connect(tmp_path / "state" / "certwright.sqlite") as db:
        db.execute("UPDATE certificates SET renew_at=? WHERE name='b.example.test'", (past,))
    config = tmp_path / "config.yaml"
    config.write_text("daemon:\n  embedded: true\n  renew_check: 1s\n")
    daemon = spawn(["--log-json", "daemon", "--config", str(config)], _env(tmp_path),
                   tmp_path / "daemon.log")
    try:
        wait_for(lambda: dict(_inventory(tmp_path))["b.example.test"] != old["b.example.test"],
                 90, "the daemon to renew the due certificate")
        wait_for(lambda: "renewal_succeeded" in daemon.text(), 30, "the daemon to settle it")
        status = json.loads(_cli(tmp_path, "status", "--json").stdout)
        assert sorted(r["name"] for r in status["renewals"]) == [NAME, "b.example.test"]
        assert all(r["status"] == "scheduled" for r in status["renewals"])
        assert dict(_inventory(tmp_path))[NAME] == old[NAME]  # not due: left alone
        assert _serial(tmp_path / "live" / "b.example.test" / "server.crt") == \
            dict(_inventory(tmp_path))["b.example.test"]
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_a_failed_renewal_exits_1_and_backs_off(tmp_path, issued):
    """The renewal's config test fails (its run's inputs, edited in the store): renew
    exits 1, the inventory keeps the old certificate, and the schedule counts the attempt.
    (install.files has already put the new files in place by then: the pipeline rolls
    back only after a failed TLS check, not after a failed config test.)"""
    old = _serial(issued / "server.crt")
    with sqlite3.connect(tmp_path / "state" / "certwright.sqlite") as db:
        body = json.loads(db.execute("SELECT body FROM runs WHERE id='first'").fetchone()[0])
        body["inputs"]["reload_test"] = "false"
        db.execute("UPDATE runs SET body=? WHERE id='first'", (json.dumps(body),))
    done = _cli(tmp_path, "renew", "--force")
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert f"{NAME}: renewal failed in state " in done.stdout
    assert "see: certwright history " in done.stdout
    assert _inventory(tmp_path) == [(NAME, old)]
    [row] = json.loads(_cli(tmp_path, "status", "--json").stdout)["renewals"]
    assert (row["name"], row["status"], row["attempts"]) == (NAME, "backoff", 1)
    assert "false" in row["last_error"] or "config test" in row["last_error"]
