"""Outbox benchmark: what the CA's durable outbox costs a message over a direct send.

In one process: the built-in mail server on loopback delivering into a scratch Maildir and
the CA's :class:`ca.outmail.Mailer` pointed at it. ``--messages`` messages (default 300,
like the CA's probes and issuance notices) go out from ``--threads`` threads (default 4)
twice: sent directly (:meth:`Mailer.send`), then through the outbox as the CA sends them
(:meth:`Outbox.enqueue` in a store transaction of its own, the commit, then
:meth:`Outbox.deliver`: the SMTP transaction and the row's "sent" mark, synchronous=FULL).

Figures, per path: ``msgs_per_s`` (wall), ``cpu_us_per_msg`` (process CPU), and the
outbox's extra wall time per message, ``outbox_overhead_us``. Every message is checked to
have arrived in ``new/``.

Usage: python bench/outbox.py [--json] [--messages N] [--threads K]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mail_path import _mail

from certwright.ca.mailserver import MailServer
from certwright.ca.outbox import Outbox
from certwright.ca.outmail import Mailer
from certwright.ca.store import CAStore
from certwright.clock import SystemClock
from certwright.mail.maildir import Maildir


def run(send: Callable[[int], None], messages: int, threads: int) -> tuple[float, float]:
    """Call ``send(i)`` for every message from ``threads`` threads: (wall, CPU) seconds."""
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(k, messages, threads):
                send(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    w0, c0 = time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} senders failed: {errors[0]!r}")
    return time.perf_counter() - w0, time.process_time() - c0


def figures(folder: Path, messages: int, threads: int) -> dict[str, Any]:
    md = Maildir(folder / "mail")
    clock = SystemClock()
    out: dict[str, Any] = {}
    with MailServer("127.0.0.1", 0, domains=["bench.test"], maildir=md.path,
                    authserv_id="bench.local") as server:
        mailer = Mailer(smarthost=("127.0.0.1", server.port), mail_from="ca@ca.bench.test")
        store = CAStore(folder / "ca.sqlite3", clock=clock)
        outbox = Outbox(store=store, mailer=mailer, clock=clock, key_path=folder / "key")
        try:
            def direct(i: int) -> None:
                to, subject, body, kind = _mail(i)
                mailer.send(to, subject, body, kind=kind)

            def queued(i: int) -> None:
                to, subject, body, kind = _mail(i)
                with store.transaction():
                    row = outbox.enqueue(to, subject, body, kind=kind)
                if outbox.deliver(row).status != "sent":
                    raise RuntimeError(f"row {row} not sent")

            run(direct, 20, threads)  # warm up: sessions, imports
            for name, send in (("direct", direct), ("outbox", queued)):
                wall, cpu = run(send, messages, threads)
                out[name] = {"msgs_per_s": round(messages / wall, 1),
                             "cpu_us_per_msg": round(cpu / messages * 1e6),
                             "seconds": round(wall, 3)}
        finally:
            mailer.close()
            store.close()
    arrived = len(md.list_new())
    if arrived != 20 + 2 * messages:
        raise SystemExit(f"{20 + 2 * messages} messages sent, {arrived} in new/")
    out["outbox_overhead_us"] = round(
        (out["outbox"]["seconds"] - out["direct"]["seconds"]) / messages * threads * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    folder = Path(tempfile.mkdtemp(prefix="cw-bench-outbox-"))
    try:
        result = {"messages": args.messages, "threads": args.threads,
                  **figures(folder, args.messages, args.threads)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
