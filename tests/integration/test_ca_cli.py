"""``ca init`` and ``ca serve`` through argparse, as the main CLI wires them."""
from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from certwright.ca.cli import register
from tests.support.ca import free_port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="certwright")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_init_is_idempotent_and_private(tmp_path: Path) -> None:
    """ca init creates keys 0600 in a 0700 dir; a second run changes nothing."""
    args = parser().parse_args(["ca", "init", "--dir", str(tmp_path / "ca")])
    assert args.func(args) == 0
    root = (tmp_path / "ca" / "root.pem").read_bytes()
    assert args.func(args) == 0
    assert (tmp_path / "ca" / "root.pem").read_bytes() == root
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    for key in ("root.key", "intermediate.key"):
        assert stat.S_IMODE((tmp_path / "ca" / "private" / key).stat().st_mode) == 0o600


def test_serve_arguments() -> None:
    """--listen and --smarthost parse as HOST:PORT; a bad value is refused."""
    args = parser().parse_args(["ca", "serve", "--dir", "d", "--listen", "127.0.0.1:9",
                                "--smarthost", "localhost:25", "--policy", "cabf"])
    assert (args.listen, args.smarthost, args.policy) == (("127.0.0.1", 9), ("localhost", 25),
                                                         "cabf")


def test_serve_runs_and_answers(tmp_path: Path) -> None:
    """ca serve in a child process answers /openapi.json and serves the root certificate."""
    port = free_port()
    code = ("import argparse,sys; from certwright.ca.cli import register; "
            "p=argparse.ArgumentParser();"
            "register(p.add_subparsers()); a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "ca", "serve", "--dir",
                             str(tmp_path / "ca"), "--listen", f"127.0.0.1:{port}"],
                            cwd=Path(__file__).parents[2], env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200 and "/api/v1/certificates" in r.json()["paths"]
        root = httpx.get(f"http://127.0.0.1:{port}/ca/root.crt").text
        assert root == (tmp_path / "ca" / "root.pem").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
