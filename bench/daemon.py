"""Benchmark the daemon: mail-to-transition latency, memory per parked run, idle CPU.

    python bench/daemon.py [--n 500] [--parked 10000] [--idle-seconds 30] [--json]

* ``mail_to_transition_p50_ms`` / ``_p99_ms``: ``--n`` runs wait for their probe mail (a
  real probe of the built-in CA, run in this process on loopback); one at a time, the mail
  is renamed into the watched Maildir's ``new/``, and the latency is from just before the
  rename to the journal's ``at`` of the run's committed ``entered verified`` entry (the
  link was followed on the CA in between: ``wait.mail`` then ``ca.verify``).
* ``rss_bytes_per_parked_run``: (daemon RSS with ``--parked`` runs waiting for mail -
  daemon RSS on an empty store) / ``--parked``, both read once the daemon is ready.
* ``idle_cpu_percent``: the daemon's user+system CPU over ``--idle-seconds`` with those runs
  parked and nothing arriving.

The daemon runs as a separate process (``certwright daemon``); runs are created and parked
by this script with the daemon's own engine class, as runs parked under the daemon are.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PIPELINE = """
pipeline: probewait
version: 1
inputs:
  to: {type: email, required: true}
  ca: {type: string, required: true}
  maildir: {type: string, required: true}
initial: probed
states:
  probed:
    run:
      - step: wait.mail
        id: probe_mail
        with: {maildir: "${maildir}", to: "${to}", link_base: "${ca}",
               link_path: "/domains/verify/"}
      - step: ca.verify
        with: {ca: "${ca}", link: "${steps.probe_mail.link}"}
    next: verified
  verified: {final: success}
"""


class Sink:
    """An SMTP sink (aiosmtpd) keeping raw messages by recipient."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        self.by_rcpt: dict[str, bytes] = {}
        self.lock = threading.Lock()
        import socket
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        with self.lock:
            for r in envelope.rcpt_tos:
                self.by_rcpt[r.lower()] = (f"Delivered-To: {r}\n".encode()
                                           + raw.replace(b"\r\n", b"\n"))
        return "250 OK"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _daemon(state: Path, maildir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    level = os.environ.get("BENCH_LOG_LEVEL", "warning")
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "certwright", "--state-dir", str(state),
                                 "--log-json", "--log-level", level, "daemon", "--maildir",
                                 str(maildir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    lock = state / "locks" / "daemon.lock"
    end = time.monotonic() + 120
    from certwright.state.locks import daemon_lock
    while time.monotonic() < end and proc.poll() is None:
        if lock.exists() and daemon_lock(state).holder() == proc.pid:
            break
        time.sleep(0.05)
    time.sleep(2.0)  # past start-up: open, scans, first sync
    if proc.poll() is not None:
        raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
    return proc


def _park(state: Path, spec: Any, inputs: list[dict[str, str]], ids: list[str]) -> None:
    from certwright.engine.daemon.locking import RunLocks
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.state.location import open_store
    store = open_store(state, synchronous="normal")
    locks = RunLocks(state, covered=lambda w: True)
    eng = Engine(store, state, options=EngineOptions(inline=True), interceptors=[locks])
    eng.open()
    for inp, rid in zip(inputs, ids, strict=True):
        eng.start_run(spec, inp, rid)
        eng.run_until_idle()
        locks.release_idle()
    eng.close()
    locks.close()
    store.close()


def latency(root: Path, n: int) -> dict[str, float]:
    from certwright.ca.client import CAClient
    from certwright.ca.passphrase import generate_passphrase
    from certwright.ca.server import CAServer
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.mail.maildir import Maildir

    sink = Sink()
    state, md = root / "lat-state", Maildir(root / "lat-Maildir")
    md.ensure()
    with CAServer(root / "ca", smarthost=("127.0.0.1", sink.port)) as ca:
        email = "bench@bench.test"
        pw = generate_passphrase("Bench Mark", email)
        with CAClient(ca.url) as c:
            c.join(email, "Bench Mark", pw, [{"question": f"q{i}", "answer": f"a{i}"}
                                             for i in range(5)])
            time.sleep(0.3)
            from certwright.mail.parse import parse_message
            link = next(u for u in parse_message(sink.by_rcpt[email]).links
                        if "/account/confirm/" in u)
            _kind, rid, token = c.parse_link(link)
            c.confirm(rid, token)
            c.login(email, pw)
            for i in range(n):
                c.add_domain(f"d{i}.bench.test")
                c.probe(f"d{i}.bench.test", "postmaster", f"bench-{i}")
        end = time.monotonic() + 60
        while len(sink.by_rcpt) < n + 1 and time.monotonic() < end:
            time.sleep(0.05)
        spec = load_pipeline_text(PIPELINE, "probewait.yaml")
        ids = [f"lat-{i}" for i in range(n)]
        _park(state, spec, [{"to": f"postmaster@d{i}.bench.test", "ca": ca.url,
                             "maildir": str(md.path)} for i in range(n)], ids)
        proc = _daemon(state, md.path, root / "lat-daemon.log")
        db = sqlite3.connect(f"file:{state / 'certwright.sqlite'}?mode=ro", uri=True)
        out = []
        try:
            for i, rid in enumerate(ids):
                raw = sink.by_rcpt[f"postmaster@d{i}.bench.test"]
                name = f"{time.time():.6f}.bench{i}.host"
                tmp = md.tmp / name
                tmp.write_bytes(raw)
                t0 = time.time()
                os.rename(tmp, md.new / name)
                row = None
                deadline = time.monotonic() + 30
                while row is None and time.monotonic() < deadline:
                    row = db.execute("SELECT at FROM journal WHERE run_id=? AND kind='entered'"
                                     " AND data LIKE '%\"to\":\"verified\"%'", (rid,)).fetchone()
                    if row is None:
                        time.sleep(0.005)  # the figure comes from the journal, not this poll
                if row is None:
                    raise RuntimeError(f"run {rid} did not reach verified; see "
                                       f"{root / 'lat-daemon.log'}")
                at = datetime.fromisoformat(row[0]).timestamp()
                out.append((at - t0) * 1000)
        finally:
            db.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    sink.controller.stop()
    out.sort()
    return {"mail_to_transition_p50_ms": round(statistics.median(out), 2),
            "mail_to_transition_p99_ms": round(out[min(len(out) - 1, int(len(out) * 0.99))], 2),
            "mail_to_transition_max_ms": round(out[-1], 2), "mails": len(out)}


def parked(root: Path, count: int, idle_seconds: float) -> dict[str, float]:
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.mail.maildir import Maildir

    md = Maildir(root / "park-Maildir")
    md.ensure()
    empty = root / "empty-state"
    proc = _daemon(empty, md.path, root / "empty-daemon.log")
    base = _rss(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)

    state = root / "park-state"
    spec = load_pipeline_text(PIPELINE, "probewait.yaml")
    t = time.monotonic()
    _park(state, spec, [{"to": f"postmaster@p{i}.bench.test", "ca": "http://127.0.0.1:9",
                         "maildir": str(md.path)} for i in range(count)],
          [f"park-{i}" for i in range(count)])
    park_s = time.monotonic() - t
    proc = _daemon(state, md.path, root / "park-daemon.log")
    try:
        full = _rss(proc.pid)
        c0, w0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        c1, w1 = _cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"parked_runs": count, "rss_empty_bytes": base, "rss_parked_bytes": full,
            "rss_bytes_per_parked_run": round(max(0, full - base) / count, 1),
            "idle_cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 3),
            "park_seconds": round(park_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="mails for the latency figures")
    p.add_argument("--parked", type=int, default=10_000, help="parked runs for RSS and CPU")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    from certwright.logs import configure
    configure(level="warning")
    root = Path(tempfile.mkdtemp(prefix="certwright-bench-daemon-"))
    try:
        result = {**latency(root, args.n), **parked(root, args.parked, args.idle_seconds),
                  "cpus": os.cpu_count()}
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(root, file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
