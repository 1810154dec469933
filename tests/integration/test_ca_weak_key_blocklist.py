"""Debian's weak keys (CVE-2008-0166) and other published keys, refused from a blocklist
the operator installs: over real HTTP with a blocklist the test builds from keys it
generates, and ``ca serve`` saying at start when it has none."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certwright.ca.server import CAServer
from certwright.ca.setup import CAPaths, init_ca
from certwright.clock import FakeClock
from tests.support.blocklists import write_badkeys_cache, write_text_blocklist
from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    active_account,
    fake_clock,
    free_port,
    make_csr,
    smtp_sink,
    verified_domain,
)

DOMAIN = "example.test"
LISTED_RSA = rsa.generate_private_key(65537, 2048)
LISTED_EC = ec.generate_private_key(ec.SECP256R1())


def ca_with_blocklist(ca_dir: Path, blocklist: Path, sink: SmtpSink,
                      clock: FakeClock) -> CAServer:
    init_ca(ca_dir, clock=clock)
    config = CAPaths(ca_dir).config
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "weak_key_blocklist": str(blocklist)}))
    return CAServer(ca_dir, smarthost=sink.smarthost, clock=clock)


@pytest.fixture(params=["badkeys-cache", "text"])
def server(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: SmtpSink,
           fake_clock: FakeClock) -> Iterator[CAServer]:
    keys = [LISTED_RSA.public_key(), LISTED_EC.public_key()]
    if request.param == "text":
        blocklist = write_text_blocklist(tmp_path / "weak-keys.txt", keys)
    else:
        blocklist = write_badkeys_cache(tmp_path / "badkeys", keys)
    with ca_with_blocklist(tmp_path / "ca", blocklist, smtp_sink, fake_clock) as ca:
        yield ca


def test_listed_keys_are_refused(server: CAServer, smtp_sink: SmtpSink) -> None:
    """A CSR whose RSA or EC key is on the blocklist is 422 weak_key naming the
    blocklist; a CSR with a key that is not on it is signed."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        acct = active_account(http, smtp_sink)
        verified_domain(http, smtp_sink, acct, DOMAIN)
        for i, key in enumerate((LISTED_RSA, LISTED_EC)):
            r = http.post("/api/v1/certificates", headers=acct.auth, json={
                "csr": make_csr([DOMAIN], key)[0], "idempotency_key": f"k{i}"})
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "weak_key" and r.json()["rule"] == "blocklist"
            assert "blocklist" in r.json()["message"]
            assert r.json()["blocklist"] in {"debianssl", "weak-keys.txt"}
        ok = http.post("/api/v1/certificates", headers=acct.auth, json={
            "csr": make_csr([DOMAIN], rsa.generate_private_key(65537, 2048))[0],
            "idempotency_key": "k-ok"})
        assert ok.status_code == 201, ok.text


def serve(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str] | str:
    """Start ``ca serve`` in a child; its output up to the listening line, or the
    finished process when it exits first."""
    code = ("import argparse,sys; from certwright.ca.cli import register; "
            "p=argparse.ArgumentParser(); register(p.add_subparsers()); "
            "a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    proc = subprocess.Popen([sys.executable, "-c", code, "ca", "serve", "--dir",
                             str(tmp_path / "ca"), "--listen", f"127.0.0.1:{free_port()}",
                             *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("CA listening"):
                return "".join(seen)
        proc.wait(timeout=20)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_warns_without_a_blocklist(tmp_path: Path) -> None:
    """With no blocklist configured or installed, ca serve starts and says so, with how
    to install one."""
    out = serve(tmp_path)
    assert isinstance(out, str), out
    assert "no weak-key blocklist" in out and "badkeys --update-bl" in out


def test_serve_with_a_blocklist_is_quiet_and_a_missing_one_is_an_error(
        tmp_path: Path) -> None:
    """--weak-key-blocklist FILE is used (no warning); a missing FILE stops ca serve
    with exit 2 and a sentence naming it, no traceback."""
    listed = write_text_blocklist(tmp_path / "weak.txt", [LISTED_RSA.public_key()])
    out = serve(tmp_path, "--weak-key-blocklist", str(listed))
    assert isinstance(out, str) and "no weak-key blocklist" not in out, out
    failed = serve(tmp_path, "--weak-key-blocklist", str(tmp_path / "gone.txt"))
    assert isinstance(failed, subprocess.CompletedProcess), failed
    assert failed.returncode == 2
    assert "gone.txt: no such file" in failed.stdout and "Traceback" not in failed.stdout


def test_init_records_a_checked_blocklist(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """ca init --weak-key-blocklist loads the file once, then records it in config.json;
    a file that is no blocklist is exit 2 naming the line, and nothing is recorded."""
    import argparse

    from certwright.ca.cli import register
    from certwright.ca.setup import load_config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    listed = write_text_blocklist(tmp_path / "weak.txt", [LISTED_RSA.public_key()])
    args = parser.parse_args(["ca", "init", "--dir", str(tmp_path / "ca"),
                              "--weak-key-blocklist", str(listed)])
    assert args.func(args) == 0
    assert "(1 keys)" in capsys.readouterr().out
    assert load_config(tmp_path / "ca")["weak_key_blocklist"] == str(listed)
    (tmp_path / "bad.txt").write_text("xyz\n")
    bad = parser.parse_args(["ca", "init", "--dir", str(tmp_path / "ca"),
                             "--weak-key-blocklist", str(tmp_path / "bad.txt")])
    assert bad.func(bad) == 2
    assert "bad.txt:1:" in capsys.readouterr().err
    assert load_config(tmp_path / "ca")["weak_key_blocklist"] == str(listed)
