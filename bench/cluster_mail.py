"""``bench/cluster.py``'s mail figure: mail to transition on a PostgreSQL store.

``--mails`` runs (default 500) wait for the probe mail of a real probe of the built-in CA
(in this process, on loopback), parked in the PostgreSQL store as a daemon parks them;
one ``certwright daemon --store postgresql://... --maildir DIR`` serves them; the mails
are renamed into the Maildir's ``new/`` at ``--rate`` a second (default 20), whatever the
daemon is doing, and each latency is from just before its rename to the journal's ``at``
of the run's committed ``entered verified`` entry (``wait.mail`` then ``ca.verify``:
the link is followed on the CA in between), read from the store once all are in.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.postgres import Cluster

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import daemon as daemon_bench  # noqa: E402  (bench/daemon.py: its probe pipeline and sink)


def _probes(ca_url: str, sink: Any, n: int) -> None:
    """An account on the CA and ``n`` probes, whose mails the sink keeps."""
    from certwright.ca.client import CAClient
    from certwright.ca.passphrase import generate_passphrase
    from certwright.mail.parse import parse_message
    email = "bench@bench.test"
    pw = generate_passphrase("Bench Mark", email)
    with CAClient(ca_url) as c:
        c.join(email, "Bench Mark", pw, [{"question": f"q{i}", "answer": f"a{i}"}
                                         for i in range(5)])
        end = time.monotonic() + 30
        while email not in sink.by_rcpt and time.monotonic() < end:
            time.sleep(0.05)
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


def _park(url: str, folder: Path, inputs: list[dict[str, str]], ids: list[str]) -> None:
    """The runs driven to their wait, 200 in a transaction, as a daemon parks them."""
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.state.postgres import PostgresStore
    store = PostgresStore(url)
    engine = Engine(store, folder, options=EngineOptions(inline=True))
    spec = load_pipeline_text(daemon_bench.PIPELINE, "probewait.yaml", engine.registry)
    engine.open()
    for start in range(0, len(ids), 200):
        engine.start_runs(spec, inputs[start:start + 200], ids[start:start + 200])
        engine.run_until_idle()
    engine.close()
    store.close()


def mail_latency(pg: Cluster, url: str, schema: str, folder: Path, command: list[str],
                 env: dict[str, str], mails: int, rate: float) -> dict[str, Any]:
    """p50/p99/max milliseconds from a mail's delivery to its run's committed transition."""
    from certwright.ca.server import CAServer
    from certwright.mail.maildir import Maildir
    sink = daemon_bench.Sink()
    md = Maildir(folder / "Maildir")
    md.ensure()
    try:
        with CAServer(folder / "ca", smarthost=("127.0.0.1", sink.port),
                      settings={"rate_limits": "off"}) as ca:
            _probes(ca.url, sink, mails)
            ids = [f"mail-{i}" for i in range(mails)]
            _park(url, folder / "parker", [
                {"to": f"postmaster@d{i}.bench.test", "ca": ca.url, "maildir": str(md.path)}
                for i in range(mails)], ids)
            state = folder / "daemon"
            state.mkdir()
            with (folder / "daemon.log").open("wb") as log:
                proc = subprocess.Popen(
                    [*command, "--state-dir", str(state), "daemon", "--store", url,
                     "--maildir", str(md.path)], env=env, stdout=log, stderr=subprocess.STDOUT)
                try:
                    _wait_ready(pg, schema, proc, folder / "daemon.log")
                    os.sync()  # the probes' and parked runs' pages written back now, not
                    # 30 s later, in the middle of the deliveries (see bench/cluster.py)
                    sent = _deliver(md, sink, mails, rate)
                    got = _wait_all(pg, schema, ids, proc, folder / "daemon.log")
                    marks = _marks(pg, schema)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
    finally:
        sink.controller.stop()
    out = sorted((got[rid] - sent[rid]) * 1000 for rid in ids)
    return {"mails": mails, "mail_rate_per_s": rate,
            "mail_to_transition_p50_ms": round(statistics.median(out), 2),
            "mail_to_transition_p99_ms": _p99(out),
            "mail_to_transition_max_ms": round(out[-1], 2),
            "mail_segments_ms": _segments(marks, sent),
            # the five slowest, by their place in the delivery order: a warm-up is told
            # from a steady tail
            "mail_to_transition_slowest": sorted(
                ((int(rid.split("-")[1]), round((got[rid] - sent[rid]) * 1000, 1))
                 for rid in ids), key=lambda p: -p[1])[:5]}


def _p99(values: list[float]) -> float:
    return round(values[min(len(values) - 1, int(len(values) * 0.99))], 2)


def _segments(marks: dict[str, dict[str, float]], sent: dict[str, float],
              ) -> dict[str, dict[str, float]]:
    """For each mark of the path (the mail taken, the verify step started and done, the
    state entered), p50 and p99 milliseconds from the delivery, so a slow tail can be
    told apart: the daemon's mail side or the CA's link check."""
    out: dict[str, dict[str, float]] = {}
    for mark in SEGMENTS:
        values = sorted((m[mark] - sent[rid]) * 1000 for rid, m in marks.items()
                        if mark in m)
        if values:
            out[mark] = {"p50": round(statistics.median(values), 2), "p99": _p99(values)}
    return out


SEGMENTS = ("mail_taken", "verify_started", "verify_done", "entered")


def _marks(pg: Cluster, schema: str) -> dict[str, dict[str, float]]:
    """Each run's moments on the mail path, from the journal: the wait's step_done (the
    mail taken), the verify step's step_started and step_done, ``entered verified``."""
    import json
    sql = (f"SELECT run_id, kind, data, at FROM {schema}.journal WHERE run_id LIKE 'mail-%' "
           f"AND kind IN ('step_started', 'step_done', 'entered') ORDER BY seq")
    out: dict[str, dict[str, float]] = {}
    for line in pg.sql(sql).splitlines():
        rid, kind, data, at = line.split("|")
        d, t = json.loads(data), datetime.fromisoformat(at).timestamp()
        m = out.setdefault(rid, {})
        if kind == "step_done" and d.get("step") == "probe_mail":
            m["mail_taken"] = t
        elif kind == "step_started" and "mail_taken" in m and d.get("step") != "probe_mail":
            m["verify_started"] = t
        elif kind == "step_done" and "verify_started" in m:
            m["verify_done"] = t
        elif kind == "entered" and d.get("to") == "verified":
            m["entered"] = t
    return out


def _wait_ready(pg: Cluster, schema: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the daemon's heartbeat row is in the store (it is past start-up), then 2 s."""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited: {log.read_text(errors='replace')[-2000:]}")
        if int(pg.sql(f"SELECT count(*) FROM {schema}.daemons")):
            time.sleep(2.0)  # the first sync and Maildir scan are behind it
            return
        time.sleep(0.1)
    raise SystemExit("the daemon did not come up within 120 s")


def _deliver(md: Any, sink: Any, mails: int, rate: float) -> dict[str, float]:
    """Each probe mail renamed into ``new/`` on a fixed schedule; when each went in."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i in range(mails):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"{time.time():.6f}.bench{i}.host"
        tmp = md.tmp / name
        tmp.write_bytes(sink.by_rcpt[f"postmaster@d{i}.bench.test"])
        sent[f"mail-{i}"] = time.time()
        os.rename(tmp, md.new / name)
    return sent


def _wait_all(pg: Cluster, schema: str, ids: list[str], proc: subprocess.Popen[bytes],
              log: Path, timeout: float = 120.0) -> dict[str, float]:
    """When each run's ``entered verified`` was committed, by the journal's ``at``. The
    first look comes a second after the last delivery: each look starts ``psql``, whose
    start would compete for the CPU with the daemon finishing the last mails."""
    time.sleep(1.0)
    sql = (f"SELECT run_id, at FROM {schema}.journal WHERE kind = 'entered' "
           f"AND data LIKE '%\"to\":\"verified\"%' AND run_id LIKE 'mail-%'")
    end = time.monotonic() + timeout
    while True:
        rows = [line.split("|") for line in pg.sql(sql).splitlines() if line]
        if len(rows) >= len(ids):
            return {rid: datetime.fromisoformat(at).timestamp() for rid, at in rows}
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"only {len(rows)} of {len(ids)} runs reached verified; "
                             f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.25)
