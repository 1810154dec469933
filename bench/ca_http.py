"""CA HTTP benchmark: the built-in CA's JSON API over loopback, server and client in one process.

In one process: the CA (:class:`ca.server.CAServer`, uvicorn in a thread) with its
smarthost pointed at the built-in mail server (:class:`ca.mailserver.MailServer`, a scratch
Maildir), and ``--threads`` client threads (default 4) sharing the steps' pooled
:class:`ca.client.CAClient`. One account is created and logged in first (not timed).

Two workloads, each timed alone:

* ``mix``: per domain what a certificate costs the CA: ``POST /api/v1/domains``,
  ``POST /api/v1/domains/{d}/probes`` (a probe mail through SMTP), ``POST
  /api/v1/confirmations`` (the link from that mail) and ``POST /api/v1/certificates``
  (CSRs are made before the clock starts), for ``--domains`` domains (default 200);
* ``light``: ``--light`` (default 1000) ``GET /api/v1/certificates?idempotency_key=`` of a
  certificate issued in the mix: authentication, one look-up, a small JSON answer — mostly
  the HTTP stack, server and client.

Each workload runs ``--rounds`` times (default 3, fresh domains each time); the figures
are those of the round with the median CPU time. Per workload:

* ``req_per_s``: API requests answered per wall second;
* ``cpu_us_per_req``: process CPU time (every thread: the clients, uvicorn's event loop,
  its worker threads, the mail server) per request, in microseconds, and
  ``user_cpu_us_per_req`` the part of it outside the kernel;
* ``client_cpu_us_per_req``: the client threads' own CPU time per request (the client
  side: CAClient and its HTTP library), the rest being the server side and the mail;
* on Linux, by thread: ``server_loop_cpu_us_per_req`` (uvicorn's event loop: HTTP, the
  app's routing, validation, async endpoints), ``server_workers_cpu_us_per_req`` (the
  threadpool running sync endpoints) and ``mail_cpu_us_per_req`` (the mail server);
* ``certs_per_s`` (mix only): domains taken from nothing to an issued certificate.

Usage: python bench/ca_http.py [--json] [--domains N] [--light N] [--threads K] [--rounds R]
"""
from __future__ import annotations

import argparse
import binascii
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.ca.client import CAClient
from certwright.ca.mailserver import MailServer
from certwright.ca.passphrase import generate_passphrase
from certwright.ca.server import CAServer

EMAIL = "admin@bench.test"
LINK = re.compile(rb"(https?://\S+/(?:account/confirm|domains/verify)/\S+?\?token=\S+)")


class LinkSink(MailServer):
    """The mail server, also noting the confirmation link each recipient was sent."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.links: dict[str, str] = {}
        self.arrived = threading.Condition()

    def deliver(self, raw: bytes, envelope: Any, session: Any) -> str:
        name = super().deliver(raw, envelope, session)
        found = LINK.search(binascii.a2b_qp(raw))  # bodies may be quoted-printable
        if found:
            with self.arrived:
                for rcpt in envelope.rcpt_tos:
                    self.links[rcpt.lower()] = found.group(1).decode()
                self.arrived.notify_all()
        return name

    def link_for(self, address: str, timeout: float = 10.0) -> str:
        with self.arrived:
            if not self.arrived.wait_for(lambda: address in self.links, timeout):
                raise SystemExit(f"no link mailed to {address} within {timeout}s")
            return self.links.pop(address)


def make_csr(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of the long-lived threads, by part: the server's event loop, its
    worker threads, the mail server (Linux: /proc; elsewhere empty)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {"server_loop": 0.0, "server_workers": 0.0, "mail": 0.0}
    for thread in threading.enumerate():
        name = thread.name
        part = ("server_loop" if name.startswith("ca-server") else
                "server_workers" if name.startswith("AnyIO worker") else
                "mail" if name.startswith("certwright-mail") else None)
        if part is None or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[part] += (int(fields[11]) + int(fields[12])) / tick
    return out


def run_threads(threads: int, items: list[Any],
                work: Callable[[CAClient, Any], None], client_of: Callable[[], CAClient],
                ) -> tuple[float, float, float, float, dict[str, float]]:
    """``work(client, item)`` for every item from ``threads`` threads: (wall, CPU, user CPU,
    client CPU) seconds and the CPU seconds of the other threads by part."""
    errors: list[BaseException] = []
    client_cpu: list[float] = []
    start = threading.Barrier(threads + 1)

    def loop(k: int) -> None:
        client = client_of()
        start.wait()
        c0 = time.thread_time()
        try:
            for item in items[k::threads]:
                work(client, item)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        client_cpu.append(time.thread_time() - c0)

    pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    w0, p0, u0, parts0 = time.perf_counter(), time.process_time(), os.times().user, _thread_cpu()
    for t in pool:
        t.join()
    wall, cpu = time.perf_counter() - w0, time.process_time() - p0
    user = os.times().user - u0
    parts = {k: v - parts0.get(k, 0.0) for k, v in _thread_cpu().items()}
    if errors:
        raise SystemExit(f"{len(errors)} client threads failed: {errors[0]!r}")
    return wall, cpu, user, sum(client_cpu), parts


def figures(requests: int, runs: list[Any]) -> dict[str, Any]:
    """The figures of the run with the median CPU time (runs are noisy on a shared host)."""
    wall, cpu, user, client_cpu, parts = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
    out = {"requests": requests, "seconds": round(wall, 3),
           "req_per_s": round(requests / wall, 1),
           "cpu_us_per_req": round(cpu / requests * 1e6),
           "user_cpu_us_per_req": round(user / requests * 1e6),
           "client_cpu_us_per_req": round(client_cpu / requests * 1e6)}
    if any(parts.values()):
        out.update({f"{k}_cpu_us_per_req": round(v / requests * 1e6) for k, v in parts.items()})
    return out


def bench(folder: Path, domains: int, light: int, threads: int, rounds: int) -> dict[str, Any]:
    names = [f"d{i}.bench.test" for i in range(domains * rounds + 8)]
    csrs = {name: make_csr(name) for name in names}
    sink = LinkSink("127.0.0.1", 0, domains=["bench.test", *names], maildir=folder / "mail",
                    authserv_id="bench.local")
    out: dict[str, Any] = {"domains": domains, "threads": threads, "rounds": rounds}
    with sink, CAServer(folder / "ca", smarthost=("127.0.0.1", sink.port)) as server:
        def client_of() -> CAClient:
            client = CAClient(server.url, shared=True)
            client.token = token
            return client

        with CAClient(server.url) as admin:
            passphrase = generate_passphrase("Bench Mark", EMAIL)
            admin.join(EMAIL, "Bench Mark", passphrase,
                       [{"question": f"Question {i}?", "answer": f"answer {i}"}
                        for i in range(5)])
            admin.confirm(*CAClient.parse_link(sink.link_for(EMAIL))[1:])
            token = admin.login(EMAIL, passphrase)

        def certificate(client: CAClient, name: str) -> None:
            client.add_domain(name)
            client.probe(name, "postmaster", idempotency_key=f"probe-{name}")
            _, request_id, link_token = CAClient.parse_link(sink.link_for(f"postmaster@{name}"))
            client.confirm(request_id, link_token)
            client.sign(csrs[name], f"cert-{name}")

        # warm up: connections, imports, first-call caches
        run_threads(threads, names[-8:], certificate, client_of)
        runs = [run_threads(threads, names[r * domains:(r + 1) * domains], certificate,
                            client_of) for r in range(rounds)]
        out["mix"] = figures(4 * domains, runs)
        wall, cpu = sorted(runs, key=lambda r: r[1])[len(runs) // 2][:2]
        out["mix"]["certs_per_s"] = round(domains / wall, 1)
        out["mix"]["cpu_us_per_cert"] = round(cpu / domains * 1e6)

        keys = [f"cert-{names[i % domains]}" for i in range(light)]

        def look_up(client: CAClient, key: str) -> None:
            if client.find_certificate(key) is None:
                raise SystemExit(f"nothing issued for {key}")

        out["light"] = figures(light, [run_threads(threads, keys, look_up, client_of)
                                       for _ in range(rounds)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--light", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    folder = Path(tempfile.mkdtemp(prefix="certwright-bench-ca-http-"))
    try:
        result = bench(folder, args.domains, args.light, args.threads, args.rounds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k:>30}: {v}")
            else:
                print(f"{key:>32}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
