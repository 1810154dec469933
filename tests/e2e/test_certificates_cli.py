"""``certwright certificates``: the inventory as a sysadmin reads it, table and JSON, with
the installed files checked against the records."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certwright.state.records import FAILED, REVOKED, RunRecord
from certwright.state.sqlite import SQLiteStore

WAITING_PIPELINE = """\
pipeline: waiter
version: 1
inputs:
  domain: {type: hostname, required: true}
initial: waiting
states:
  waiting:
    run:
      - step: wait.file
        with: {path: "${run.dir}/approved"}
    timeout: {after: 2d, to: done}
    next: done
  done: {final: success}
"""


def _cli(tmp_path: Path, *args: str, now: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state"),
           "CERTWRIGHT_LIVE_DIR": str(tmp_path / "live")}
    if now:
        env["CERTWRIGHT_NOW"] = now
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """A store with one valid certificate (a real run on the built-in CA), one waiting run,
    and expiring, expired, revoked and failed entries made from the real record."""
    tmp_path = tmp_path_factory.mktemp("inv")
    done = _cli(tmp_path, "run", "cacert", "--set", "domain=valid.example.test", "--run-id", "v")
    assert done.returncode == 0, done.stderr[-3000:]
    waiter = tmp_path / "waiter.yaml"
    waiter.write_text(WAITING_PIPELINE)
    parked = _cli(tmp_path, "run", str(waiter), "--set", "domain=wait.example.test",
                  "--no-wait", "--run-id", "w")
    assert parked.returncode == 3, parked.stderr[-3000:]
    store = SQLiteStore(tmp_path / "state" / "certwright.sqlite")
    try:
        real = store.find_certificate("valid.example.test")
        assert real is not None
        with store.transaction() as tx:
            tx.put_certificate(dataclasses.replace(
                real, name="soon.example.test", renew_at="2026-01-01T00:00:00Z"))
            tx.put_certificate(dataclasses.replace(
                real, name="old.example.test", not_after="2026-01-02T00:00:00Z",
                renew_at="2026-01-01T00:00:00Z"))
            tx.put_certificate(dataclasses.replace(real, name="gone.example.test",
                                                   status=REVOKED))
            tx.put_run(RunRecord(id="f", pipeline="cacert", spec_hash="0" * 64, state="failed",
                                 status=FAILED, error="state 'registered': step ca.probe failed",
                                 inputs={"domain": "fail.example.test"},
                                 created="2026-01-01T00:00:00Z", updated="2026-01-01T00:00:00Z"))
    finally:
        store.close()
    return tmp_path, real


def test_json_lists_every_certificate_with_its_fields_and_state(inventory):
    tmp_path, real = inventory
    shown = _cli(tmp_path, "certificates", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    rows = {r["name"]: r for r in doc["certificates"]}
    assert {n: r["state"] for n, r in rows.items()} == {
        "valid.example.test": "valid", "soon.example.test": "expiring",
        "old.example.test": "expired", "gone.example.test": "revoked",
        "fail.example.test": "failed",
        "wait.example.test": f"waiting for file {tmp_path / 'state' / 'runs' / 'w' / 'approved'}"
                             " to appear"}
    valid = rows["valid.example.test"]
    folder = tmp_path / "live" / "valid.example.test"
    assert valid["names"] == ["valid.example.test"]
    assert valid["issuer"].startswith("http://127.0.0.1:")  # the embedded CA, as it ran
    assert valid["pipeline"] == "cacert"
    assert valid["run"] == "v" and valid["dir"] == str(folder)
    assert valid["paths"]["cert"] == str(folder / "server.crt")
    assert valid["paths"]["key"] == str(folder / "server.key")
    assert valid["serial"] == real.serial and len(valid["serial"]) > 8
    assert valid["not_before"] < valid["not_after"] and 100 < valid["days_left"] < 400
    assert valid["next_renewal"] and valid["not_before"] < valid["next_renewal"] < \
        valid["not_after"]
    assert valid["files"] == {"cert": "ok", "chain": "ok", "fullchain": "ok", "key": "ok"}
    assert valid["problems"] == []
    assert valid["inputs"]["domain"] == "valid.example.test"
    assert rows["fail.example.test"]["problems"] == ["state 'registered': step ca.probe failed"]


def test_the_table_shows_a_line_per_certificate(inventory):
    tmp_path, real = inventory
    shown = _cli(tmp_path, "certificates")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "NAMES", "NOT", "AFTER", "DAYS", "SERIAL",
                                "NEXT", "RENEWAL", "FOLDER"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert by_name["valid.example.test"].split()[1] == "valid"
    assert real.serial[:16] in by_name["valid.example.test"]
    assert by_name["wait.example.test"].split()[1:3] == ["waiting", "for"]


def test_time_passing_makes_a_valid_certificate_expiring_then_expired(inventory):
    tmp_path, real = inventory
    later = _cli(tmp_path, "certificates", "valid.example.test", "--json",
                 now=real.renew_at.replace("Z", "") + "Z")
    assert json.loads(later.stdout)["certificates"][0]["state"] == "expiring"
    dead = _cli(tmp_path, "certificates", "valid.example.test", "--json", now=real.not_after)
    row = json.loads(dead.stdout)["certificates"][0]
    assert row["state"] == "expired" and row["days_left"] <= 0


def test_an_unknown_name_is_a_clear_error(inventory):
    tmp_path, _ = inventory
    shown = _cli(tmp_path, "certificates", "nothing.example.test")
    assert shown.returncode == 2 and "no certificate named 'nothing.example.test'" in shown.stderr


def test_a_file_changed_or_removed_behind_its_back_is_reported(tmp_path):
    done = _cli(tmp_path, "run", "cacert", "--set", "domain=a.example.test", "--run-id", "a")
    assert done.returncode == 0, done.stderr[-3000:]
    other = _cli(tmp_path, "run", "cacert", "--set", "domain=b.example.test", "--run-id", "b")
    assert other.returncode == 0, other.stderr[-3000:]
    a, b = tmp_path / "live" / "a.example.test", tmp_path / "live" / "b.example.test"
    (a / "server.crt").write_bytes((b / "server.crt").read_bytes())  # by hand, behind its back
    (a / "chain.pem").unlink()
    shown = _cli(tmp_path, "certificates", "a.example.test", "--json")
    row = json.loads(shown.stdout)["certificates"][0]
    assert row["files"]["cert"] == "changed" and row["files"]["chain"] == "removed"
    assert any("server.crt was changed: it holds serial" in p for p in row["problems"])
    assert f"{a / 'chain.pem'} was removed" in row["problems"]
    table = _cli(tmp_path, "certificates").stdout
    assert f"a.example.test: {a / 'server.crt'} was changed" in table


def test_the_daemons_renewals_list_each_certificate_once_by_name(tmp_path):
    """The daemon scheduled ca.sign's copy in the run folder and the installed file as two
    lineages; the schedule now holds installed certificates, by name."""
    from certwright.clock import FakeClock
    from certwright.engine.daemon.renew import Renewer, renewals_status
    from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path

    done = _cli(tmp_path, "run", "cacert", "--set", "domain=a.example.test", "--run-id", "a")
    assert done.returncode == 0, done.stderr[-3000:]
    state = tmp_path / "state"
    store = SQLiteStore(state / "certwright.sqlite")
    renewer = Renewer(state, store, FakeClock(),
                      lambda name: load_pipeline(resolve_pipeline_path(name)),
                      lambda *a: "never")
    try:
        assert renewer.check() == []
    finally:
        renewer.close()
        store.close()
    items = renewals_status(state)
    assert [(i["name"], i["cert_path"]) for i in items] == [
        ("a.example.test", str(tmp_path / "live" / "a.example.test" / "server.crt"))]
    status = _cli(tmp_path, "status")
    assert "renewals:\n  a.example.test: scheduled, next " in status.stdout, status.stdout
    shown = json.loads(_cli(tmp_path, "certificates", "--json").stdout)["certificates"][0]
    assert shown["next_renewal"] == items[0]["next_at"]
