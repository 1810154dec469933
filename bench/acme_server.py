"""Benchmark: the built-in CA's ACME server against Pebble, CPU per certificate.

The same client load for both servers: certwright's own ACME client, the ``acme``
pipeline in one running engine in this process (as the daemon serves runs) with
``--parallel`` (8) workers and all N runs started at once, so 8 orders are in flight in
all (``EngineDriver`` of ``bench/acme_vs_peers.py``). Each run makes its own EC P-256 key
and CSR and answers http-01 for real from one webroot served over HTTP by a process of its
own (``http.server``, backlog 128), on the one port both servers are told to validate; the
names resolve through the test DNS server (a process of its own, authoritative for the
bench zone and its parents, so the CA's CAA lookups are answered too). One account per
server, registered by a warm-up certificate before the clock starts.

1. Pebble (Debian ``pebble``, ``PEBBLE_VA_NOSLEEP=1``, its in-memory store; HTTPS).
2. The built-in CA as deployed: ``certwright ca init`` and ``certwright ca serve`` as a
   process of its own with its durable SQLite store, its issuance mail to the account's
   contact through ``certwright mail serve`` (another process, into a Maildir), its CRL
   and AIA; its ACME settings point the http-01 port and the resolver at the bench's;
   rate limits off (``--rate-limit off``), as the tests do. Plain HTTP on loopback (no TLS
   in front; Pebble serves HTTPS and so pays for TLS, which the CA does not).

The figure that compares the servers is each server process's own CPU (user + system from
``/proc/PID/stat``, children excluded) between the first and the last certificate of the
N, per certificate: ``pebble_cpu_s_per_cert``, ``certwright_ca_cpu_s_per_cert`` and
``cpu_ratio_to_pebble`` (ours over Pebble's, goal <= 1); ``..._certs_per_s`` is N over the
wall time (the client, on the same shared cores, may well be the bottleneck there).
``certwright_mail_cpu_s_per_cert`` is the mail server's, for information. ``--json``
prints one object; ``load_before``/``load_after`` are the machine's load averages.

Usage: python bench/acme_server.py [--n 200] [--parallel 8] [--json] [--only pebble|ca]
[--profile DIR] (``--profile DIR`` samples the CA and the mail server with ``py-spy record
--gil``, which must be on PATH, into ``ca.txt`` and ``mail.txt`` there, as
``bench/cacert.py`` does; the CPU figures are then not comparable).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import acme_vs_peers  # bench/, beside this file
import cacert
import peers
import structlog

from certwright.ca.setup import CAPaths, init_ca
from certwright.clock import SystemClock
from tests.support.pebble import Pebble, free_port

ZONE = "bench.acme.test"
CONTACT = f"admin@{ZONE}"
SERVERS = ("pebble", "ca")


def load(setting: peers.Setting, server_pid: int, n: int, parallel: int,
         tag: str) -> dict[str, float]:
    """Issue one warm-up certificate, then N at once with ``parallel`` workers; the
    server's CPU and the wall time of the N. RuntimeError when a run does not install."""
    driver = acme_vs_peers.EngineDriver(setting, parallel)
    try:
        driver.issue([f"warm.{tag}.{ZONE}"])  # registers the account
        domains = [f"{tag}{i}.{ZONE}" for i in range(n)]
        cpu, wall = acme_vs_peers._cpu_of(server_pid), time.perf_counter()
        driver.issue(domains)
        wall = time.perf_counter() - wall
        cpu = acme_vs_peers._cpu_of(server_pid) - cpu
    finally:
        driver.close()
    return {"cpu_s_per_cert": cpu / n, "certs_per_s": n / wall, "seconds": wall}


def run_pebble(work: Path, dns: str, http_port: int, webroot: Path, n: int,
               parallel: int) -> dict[str, float]:
    with Pebble(work / "pebble", dns_server=dns, http_port=http_port) as pebble:
        setting = peers.Setting(pebble.directory, pebble.ca_bundle, webroot, CONTACT,
                                work / "pebble-client", slots=parallel)
        figures = load(setting, acme_vs_peers._pid(pebble), n, parallel, "pebble")
    return {f"pebble_{k}": v for k, v in figures.items()}


def run_ca(work: Path, dns: str, http_port: int, webroot: Path, n: int, parallel: int,
           profile: Path | None) -> dict[str, float]:
    """The CA and the mail server as processes, the load, and a check that the CA's store
    holds every certificate and its outbox sent every issuance mail."""
    ca_dir, maildir, smtp, port = work / "ca", work / "Maildir", free_port(), free_port()
    init_ca(ca_dir, clock=SystemClock(), name="bench CA")
    config = CAPaths(ca_dir).config  # the ACME settings are edited in, as an operator does
    config.write_text(json.dumps({**json.loads(config.read_text()), "acme_resolver": dns,
                                  "acme_http01_port": http_port}, indent=2))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "CERTWRIGHT_STATE_DIR": str(work / "ca-client-state")}
    env.pop("CERTWRIGHT_NOW", None)
    procs = cacert.Procs(work, env, profile)
    try:
        procs.start("mail", ["mail", "serve", "--listen", f"127.0.0.1:{smtp}", "--maildir",
                             str(maildir), "--domain", ZONE], "listening on")
        serve = ["ca", "serve", "--dir", str(ca_dir), "--listen", f"127.0.0.1:{port}",
                 "--smarthost", f"127.0.0.1:{smtp}", "--rate-limit", "off"]
        procs.start("ca", serve, "CA listening")
        setting = peers.Setting(f"http://127.0.0.1:{port}/acme/directory",
                                CAPaths(ca_dir).root_cert, webroot, CONTACT,
                                work / "ca-client", slots=parallel,
                                extra={"allow_insecure": "true"})
        mail_cpu = cacert.cpu_seconds(procs.children["mail"].pid)
        figures = load(setting, procs.children["ca"].pid, n, parallel, "ca")
        mail_cpu = cacert.cpu_seconds(procs.children["mail"].pid) - mail_cpu
        _check_ca(ca_dir, n + 1, procs)
    finally:
        procs.stop()
    out = {f"certwright_ca_{k}": v for k, v in figures.items()}
    out["certwright_mail_cpu_s_per_cert"] = mail_cpu / n
    return out


def _check_ca(ca_dir: Path, wanted: int, procs: cacert.Procs) -> None:
    """RuntimeError unless the CA's store holds ``wanted`` certificates and its outbox
    sent one issuance mail each (waiting up to 30 s for the outbox to drain)."""
    db = next(p for p in ca_dir.glob("*.sqlite3"))
    deadline = time.monotonic() + 30
    while True:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            issued = int(con.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
            unsent = int(con.execute(
                "SELECT COUNT(*) FROM outbox WHERE status != 'sent'").fetchone()[0])
        finally:
            con.close()
        if issued == wanted and not unsent:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the CA holds {issued} certificates of {wanted} and "
                               f"{unsent} unsent mails; its log:\n{procs.log('ca')[-2000:]}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="certificates per server (200)")
    parser.add_argument("--parallel", type=int, default=8, help="orders in flight (8)")
    parser.add_argument("--only", choices=SERVERS, action="append", help="only this server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", type=Path, help="py-spy the CA and mail server into DIR")
    args = parser.parse_args(argv)
    if args.n < 1 or args.parallel < 1:
        parser.error("--n and --parallel must be at least 1")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen = args.only or list(SERVERS)
    figures: dict[str, Any] = {"n": args.n, "parallel": args.parallel,
                               "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="acme-server-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dns = acme_vs_peers._dns_process(work / "records.json", (ZONE, "acme.test", "test"))
        stack.callback(dns.wait, 5)
        stack.callback(dns.terminate)
        address = (dns.stdout.readline() if dns.stdout else "").strip()
        if not address:
            raise RuntimeError("the test DNS server did not start")
        webroot, http_port = work / "webroot", free_port()
        (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        server = subprocess.Popen(
            [sys.executable, "-c", acme_vs_peers.WEBROOT_CHILD, str(webroot), str(http_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(server.wait, 5)
        stack.callback(server.terminate)
        acme_vs_peers._wait_listening(http_port)
        if "pebble" in chosen:
            figures.update(run_pebble(work, address, http_port, webroot, args.n,
                                      args.parallel))
        if "ca" in chosen:
            figures.update(run_ca(work, address, http_port, webroot, args.n, args.parallel,
                                  args.profile))
    if "pebble_cpu_s_per_cert" in figures and "certwright_ca_cpu_s_per_cert" in figures:
        figures["cpu_ratio_to_pebble"] = (figures["certwright_ca_cpu_s_per_cert"]
                                          / max(figures["pebble_cpu_s_per_cert"], 1e-9))
    figures["load_after"] = list(os.getloadavg())
    figures["goal"] = {"cpu_ratio_to_pebble": "<= 1"}
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:34} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
