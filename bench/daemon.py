"""Benchmark the daemon: mail-to-transition latency, memory per parked run, idle CPU.

    python bench/daemon.py [--n 500] [--parked 100000] [--idle-seconds 30] [--busy] [--json]

* ``mail_to_transition_p50_ms`` / ``_p99_ms``: ``--n`` runs wait for their probe mail (a
  real probe of the built-in CA, run in this process on loopback); one at a time, the mail
  is renamed into the watched Maildir's ``new/``, and the latency is from just before the
  rename to the journal's ``at`` of the run's committed ``entered verified`` entry (the
  link was followed on the CA in between: ``wait.mail`` then ``ca.verify``).
* ``mail_to_taken_p50_ms`` / ``_p99_ms``: the mail's part of it, from before the rename to
  the ``wait.mail`` step's ``step_done`` (routed, offered, parsed, judged; its take
  committed with that ``step_done``, the move to ``cur/`` after it);
  ``ca_verify_p50_ms`` / ``_p99_ms``: the ``ca.verify`` step's own time (its
  ``step_started`` to its ``step_done``: the HTTP call and the CA's commit).
* ``--busy``: the latency figures are measured with ``bench/engine.py`` running beside
  them, restarted whenever it ends (a machine with other work on it); ``busy`` in the JSON
  says which case it was.
* ``rss_bytes_per_parked_run``: (daemon RSS with ``--parked`` runs waiting for mail minus
  daemon RSS on an empty store) / ``--parked``. Both daemons run under
  ``bench/daemon_probe.py``, which on a signal collects garbage and trims the heap
  (``malloc_trim``) inside the daemon before reading its memory, so neither figure is
  start-up garbage; each is the lowest of ``PROBES`` readings once the daemon is ready.
  SQLite's page cache is heap memory of the daemon, so it is counted (``anonymous`` is
  given beside ``rss``; ``store_bytes_per_parked_run`` is the database's size on disk).
* ``idle_cpu_percent`` (also as ``idle_cpu_percent_at_N``, N the ``--parked`` count): the
  daemon's user+system CPU over ``--idle-seconds`` with those runs parked and nothing
  arriving (goal: at most 2 % at 100,000).

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
from typing import Any, Self

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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROBES = 5


def _daemon(state: Path, maildir: Path, log: Path,
            probe: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    head = ([sys.executable, str(REPO / "bench" / "daemon_probe.py"), str(probe)] if probe
            else [sys.executable, "-m", "certwright"])
    proc = subprocess.Popen([*head, "--state-dir", str(state),
                             "--log-json", "--log-level",
                             os.environ.get("BENCH_LOG_LEVEL", "warning"), "daemon",
                             "--maildir", str(maildir)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115 (open while the daemon runs)
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


def _memory(proc: subprocess.Popen[bytes], probe: Path) -> dict[str, int]:
    """The lowest of PROBES collected-and-trimmed readings of the daemon's memory."""
    readings: list[dict[str, int]] = []
    for want in range(1, PROBES + 1):
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                found = json.loads(probe.read_text())
            except (OSError, ValueError):
                found = {}
            if found.get("seq", 0) >= want:
                readings.append(found)
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("the daemon did not answer the memory probe")
        time.sleep(0.2)
    return min(readings, key=lambda r: r["rss"])


def _park(state: Path, spec: Any, inputs: list[dict[str, str]], ids: list[str],
          batch: int = 200) -> None:
    """Park the runs as the daemon would have: created ``batch`` at a time in one
    transaction each, driven until they wait, their run locks released."""
    from certwright.engine.daemon.locking import RunLocks
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.state.location import open_store
    store = open_store(state, synchronous="normal")
    locks = RunLocks(state, covered=lambda w: True)
    eng = Engine(store, state, options=EngineOptions(inline=True), interceptors=[locks])
    eng.open()
    for start in range(0, len(ids), batch):
        eng.start_runs(spec, inputs[start:start + batch], ids[start:start + batch])
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
    with CAServer(root / "ca", smarthost=("127.0.0.1", sink.port),
                  settings={"rate_limits": "off"}) as ca:
        email = "bench@bench.test"
        pw = generate_passphrase("Bench Mark", email)
        with CAClient(ca.url) as c:
            c.join(email, "Bench Mark", pw, [{"question": f"q{i}", "answer": f"a{i}"}
                                             for i in range(5)])
            time.sleep(0.3)
            from certwright.mail.parse import parse_message
            link = next(u for u in parse_message(sink.by_rcpt[email]).links
                        if "/account/confirm/" in u)
            _, rid, token = c.parse_link(link)
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
        os.sync()  # what the probes and the parking wrote goes to disk now, not mid-figure
        db = sqlite3.connect(f"file:{state / 'certwright.sqlite'}?mode=ro", uri=True)
        out: list[float] = []
        mail_side: list[float] = []
        ca_side: list[float] = []
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
                taken, verify = _split(db, rid)
                mail_side.append((taken - t0) * 1000)
                ca_side.append(verify * 1000)
        finally:
            db.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    sink.controller.stop()
    out.sort()
    return {"mail_to_transition_p50_ms": round(statistics.median(out), 2),
            "mail_to_transition_p99_ms": _p99(out),
            "mail_to_transition_max_ms": round(out[-1], 2), "mails": len(out),
            "mail_to_taken_p50_ms": round(statistics.median(mail_side), 2),
            "mail_to_taken_p99_ms": _p99(mail_side),
            "ca_verify_p50_ms": round(statistics.median(ca_side), 2),
            "ca_verify_p99_ms": _p99(ca_side)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)


def _split(db: sqlite3.Connection, rid: str) -> tuple[float, float]:
    """When the mail was taken (the ``wait.mail`` step's ``step_done``), and how long the
    ``ca.verify`` step took (its ``step_started`` to its ``step_done``), from the journal."""
    rows = db.execute("SELECT kind, data, at FROM journal WHERE run_id=? AND kind IN"
                      " ('step_started', 'step_done') ORDER BY seq", (rid,)).fetchall()
    at: dict[tuple[str, int], float] = {}
    for kind, data, when in rows:
        at[kind, json.loads(data)["index"]] = datetime.fromisoformat(when).timestamp()
    return at["step_done", 0], at["step_done", 1] - at["step_started", 1]


def parked(root: Path, count: int, idle_seconds: float) -> dict[str, float]:
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.mail.maildir import Maildir

    md = Maildir(root / "park-Maildir")
    md.ensure()
    empty = root / "empty-state"
    proc = _daemon(empty, md.path, root / "empty-daemon.log", root / "empty-probe.json")
    try:
        base = _memory(proc, root / "empty-probe.json")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    state = root / "park-state"
    spec = load_pipeline_text(PIPELINE, "probewait.yaml")
    t = time.monotonic()
    _park(state, spec, [{"to": f"postmaster@p{i}.bench.test", "ca": "http://127.0.0.1:9",
                         "maildir": str(md.path)} for i in range(count)],
          [f"park-{i}" for i in range(count)])
    park_s = time.monotonic() - t
    proc = _daemon(state, md.path, root / "park-daemon.log", root / "park-probe.json")
    try:
        full = _memory(proc, root / "park-probe.json")
        c0, w0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        c1, w1 = _cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    store = sum(f.stat().st_size for f in state.glob("certwright.sqlite*"))
    return {"parked_runs": count, "rss_empty_bytes": base["rss"], "rss_parked_bytes": full["rss"],
            "anonymous_empty_bytes": base["anonymous"],
            "anonymous_parked_bytes": full["anonymous"],
            "rss_bytes_per_parked_run": round((full["rss"] - base["rss"]) / count, 1),
            "anonymous_bytes_per_parked_run":
                round((full["anonymous"] - base["anonymous"]) / count, 1),
            "store_bytes_per_parked_run": round(store / count, 1),
            "idle_cpu_percent": round(100 * (c1 - c0) / (w1 - w0), 3),
            f"idle_cpu_percent_at_{count}": round(100 * (c1 - c0) / (w1 - w0), 3),
            "park_seconds": round(park_s, 1)}


class Busy:
    """``bench/engine.py`` running beside the measurement, restarted whenever it ends."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self.started = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "engine.py"), "--json",
                 "--runs", "5000", "--parked", "2000", "--resume", "20000"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started += 1
            while self._proc.poll() is None and not self._stop.wait(0.2):
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)
        self._thread.join(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="mails for the latency figures")
    p.add_argument("--parked", type=int, default=100_000,
                   help="parked runs for memory and idle CPU (100,000; 0: latency only)")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--busy", action="store_true",
                   help="measure the latency with bench/engine.py running beside it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    from certwright.logs import configure
    configure(level="warning")
    root = Path(tempfile.mkdtemp(prefix="certwright-bench-daemon-"))
    try:
        load = list(os.getloadavg())
        if args.busy:
            with Busy() as busy:
                lat = {**latency(root, args.n), "busy": True, "busy_load": list(os.getloadavg()),
                       "busy_engine_runs": busy.started}
        else:
            lat = {**latency(root, args.n), "busy": False}
        result = {"load_before": load, **lat,
                  **(parked(root, args.parked, args.idle_seconds) if args.parked else {}),
                  "cpus": os.cpu_count(),
                  "load_after": list(os.getloadavg())}
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
