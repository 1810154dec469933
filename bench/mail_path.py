"""Mail path benchmark: the CA's Mailer sending over SMTP on loopback into the Maildir.

In one process: the built-in mail server (:class:`ca.mailserver.MailServer`) on loopback
delivering into a scratch Maildir, and the CA's :class:`ca.outmail.Mailer` with its
smarthost pointed at it. ``--messages`` messages (default 500) like the CA's domain probes
and issuance notices are sent from 1 thread, then from ``--threads`` threads (default 8).

Figures, per sender count:

* ``msgs_per_s``: messages delivered (250 received by the sender) per wall second;
* ``cpu_us_per_msg``: process CPU time (all threads: senders, the server's event loop and
  its delivery threads) per message, in microseconds, and ``user_cpu_us_per_msg`` the part
  of it outside the kernel (the kernel's share is mostly the fsyncs);

and the parts, each measured alone in a loop:

* ``build_us``: building one message's bytes (:meth:`Mailer.build`);
* ``maildir_deliver_us``: one :meth:`engine.maildir.Maildir.deliver` (wall; tmp write,
  fsync, link into new/, folder fsync), and ``maildir_deliver_cpu_us`` its CPU.

Every message is checked to have arrived in ``new/``.

Usage: python bench/mail_path.py [--json] [--messages N] [--threads K]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from certwright.ca.mailserver import MailServer
from certwright.ca.outmail import Mailer
from certwright.mail.maildir import Maildir

SERIAL = "5F:3A:91:0C:77:E2:4B:18:A0:33:9D:61:C4:08:F7:2E:95:1B:6D:40"


def _mail(i: int) -> tuple[str, str, str, str]:
    """(to, subject, body, kind) like the CA's probe and issuance mails, alternating."""
    domain = f"d{i}.bench.test"
    if i % 2 == 0:
        url = f"http://127.0.0.1:8443/domains/verify/{i:08d}-7c1f0e?token=Zm9vYmFyYmF6cXV4{i:06d}"
        return ("postmaster@bench.test", f"Verify {domain} for a certwright CA account",
                (f"An account of the certwright CA asked to verify the domain {domain}.\n\n"
                 f"If that was you (or someone you trust), open this link within 48 hours "
                 f'and choose "Verify this domain":\n\n{url}\n\nIf not, open it and choose '
                 f'"I did not ask for this".\n'), "domain_probe")
    return ("admin@bench.test", f"Your certificate for {domain} (serial {SERIAL})",
            (f"The CA signed a certificate for {domain}.\n\nSerial: {SERIAL}\n"
             f"SHA256 Fingerprint: {'ab' * 32}\nValid until: 2026-07-01T00:00:00Z\n\n"
             f"http://127.0.0.1:8443/certificates/{SERIAL}\n\n"
             "If you did not ask for it, revoke it and tell the CA's operator.\n"), "cert_issued")


def send_all(mailer: Mailer, messages: int, threads: int,
             offset: int) -> tuple[float, float, float]:
    """Send ``messages`` messages from ``threads`` threads: (wall, CPU, user CPU) seconds."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        start.wait()
        try:
            for i in range(k, messages, threads):
                to, subject, body, kind = _mail(offset + i)
                mailer.send(to, subject, body, kind=kind)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    w0, c0, u0 = time.perf_counter(), time.process_time(), os.times().user
    for t in pool:
        t.join()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    user = os.times().user - u0
    if errors:
        raise SystemExit(f"{len(errors)} senders failed: {errors[0]!r}")
    return wall, cpu, user


def path_figures(folder: Path, messages: int, thread_counts: list[int]) -> dict[str, Any]:
    md = Maildir(folder / "mail")
    out: dict[str, Any] = {}
    with MailServer("127.0.0.1", 0, domains=["bench.test"], maildir=md.path,
                    authserv_id="bench.local") as server:
        mailer = Mailer(smarthost=("127.0.0.1", server.port), mail_from="ca@ca.bench.test")
        try:
            send_all(mailer, 20, max(thread_counts), 10**6)  # warm up: sessions, imports
            sent = 20
            for threads in thread_counts:
                wall, cpu, user = send_all(mailer, messages, threads, sent)
                sent += messages
                out[f"threads_{threads}"] = {
                    "msgs_per_s": round(messages / wall, 1),
                    "cpu_us_per_msg": round(cpu / messages * 1e6),
                    "user_cpu_us_per_msg": round(user / messages * 1e6),
                    "seconds": round(wall, 3)}
        finally:
            mailer.close()
    arrived = len(md.list_new())
    if arrived != sent:
        raise SystemExit(f"{sent} messages sent, {arrived} in new/")
    return out


def build_us(rounds: int = 2000) -> float:
    mailer = Mailer(smarthost=("127.0.0.1", 1), mail_from="ca@ca.bench.test")
    mails = [_mail(i) for i in range(rounds)]
    t0 = time.process_time()
    for to, subject, body, kind in mails:
        mailer.build(to, subject, body, kind=kind)
    return (time.process_time() - t0) / rounds * 1e6


def maildir_us(folder: Path, rounds: int = 300) -> tuple[float, float]:
    md = Maildir(folder / "alone")
    md.ensure()
    raw = b"Subject: x\n\n" + b"y" * 1200 + b"\n"
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        md.deliver(raw)
    return ((time.perf_counter() - w0) / rounds * 1e6,
            (time.process_time() - c0) / rounds * 1e6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    folder = Path(tempfile.mkdtemp(prefix="certwright-bench-mail-"))
    try:
        result: dict[str, Any] = {"messages": args.messages}
        result.update(path_figures(folder, args.messages, sorted({1, args.threads})))
        result["build_us"] = round(build_us(), 1) if hasattr(Mailer, "build") else None
        wall, cpu = maildir_us(folder)
        result["maildir_deliver_us"] = round(wall)
        result["maildir_deliver_cpu_us"] = round(cpu)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
