"""Daemons on one PostgreSQL store: transition throughput against raw PostgreSQL commits.

    python bench/cluster.py [--runs 10000] [--daemons 1,2,3] [--failover-runs 1000]
                            [--lease 15] [--mails 500] [--json]

A PostgreSQL cluster of this script's own (Debian ``postgresql``, ``initdb`` in a temp
folder, started with PostgreSQL's durable defaults: ``fsync`` on) holds one store (a
schema) per daemon count. In each, ``--runs`` runs of a 5-state pipeline with no-op steps
are created first (by this script, in batches, one commit per 1,000 runs, as ``run
--no-wait`` or an inbox creates them), then that many ``certwright daemon --store
postgresql://...`` processes are started, each with its own state folder, and drive them
to the end.

* ``transitions_per_s_N``: the state entries the daemons committed (4 a run: s2 to s5;
  s1 was entered when the run was created) over the span from the first to the last of
  them in the journal (so daemon start-up is not counted); N daemons.
* ``pg_raw_commits_per_s``: a plain psycopg loop inserting journal-sized rows (the mean
  size of this run's journal rows), one commit per row, with ``synchronous_commit`` as
  the store sets it (``on``), into the same cluster; ``ratio_to_raw_1`` =
  ``transitions_per_s_1`` over it (goal >= 0.5). The engine commits the changes of a
  whole batch of runs at once, which is how it can exceed 1.
* Per transition, for ``docs/scaling.md``: ``pg_commits_per_transition`` and
  ``pg_rows_per_transition`` (``pg_stat_database``: commits, rows inserted, updated and
  deleted), ``pg_cpu_ms_per_transition`` (the server's processes, reaped backends
  included) and ``daemon_cpu_ms_per_transition`` (all daemons together).
* ``scaling_3_over_1``: ``transitions_per_s_3`` over ``transitions_per_s_1``.
* ``failover_s`` (with ``lease_s``; goal at most ``lease_s + 2``): from SIGKILL of the
  daemon driving ``--failover-runs`` runs, each with a step executing, to every one of
  them leased by another daemon (:mod:`cluster_failover`).
* ``mail_to_transition_p50_ms`` / ``_p99_ms`` / ``_max_ms`` (goal p99 <= 20): ``--mails``
  probe mails of the built-in CA delivered into a Maildir at ``--rate`` a second to runs
  parked in the PostgreSQL store, one daemon serving them (:mod:`cluster_mail`); with
  ``mail_segments_ms`` (p50 and p99 of each mark of the path: mail taken, verify started
  and done, state entered) and ``mail_to_transition_slowest`` (the five slowest mails, by
  their place in the delivery order).

Each phase is measured on a settled disk: the script flushes the machine's dirty pages
(``os.sync()``) before it. Without that, the pages PostgreSQL wrote in one phase are
written back by the kernel about 30 s later (``vm.dirty_expire_centisecs``), in bursts
every 5 s (``vm.dirty_writeback_centisecs``), and each burst delays the commits of the
phase then running: the mail figures, measured after 8,000 bulk transitions, showed a
stall of 50-190 ms every 5 s (see ``docs/scaling.md``).

A daemon count the store refuses (a daemon exits at once, e.g. where one daemon per
store is the rule) is reported with its figure null and the daemon's words in
``refused_N``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import FIVE_STATES  # noqa: E402  (bench/engine.py: the same 5-state pipeline)
from tests.support.postgres import Cluster, cluster  # noqa: E402  (after the path)

TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 1000


def _cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` (and, with the children's fields, of its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def _live_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_cpu_s(pg: Cluster) -> float:
    """CPU seconds of the cluster so far: the postmaster with its reaped children (ended
    backends), plus its children alive now."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    total = _cpu_s(master)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def pg_counters(pg: Cluster) -> tuple[int, int]:
    """(commits, rows written) of the database so far."""
    row = pg.sql("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
                 "FROM pg_stat_database WHERE datname = 'certwright'")
    commits, rows = row.split("|")
    return int(commits), int(rows)


def settle_disk() -> None:
    """Write back every dirty page now, so the next phase's commits do not wait behind the
    kernel's writeback of what the last phase wrote (see the module)."""
    os.sync()


def create_runs(url: str, runs: int, folder: Path) -> None:
    """``runs`` runs of the pipeline, created and entered, not driven."""
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.state.postgres import PostgresStore
    store = PostgresStore(url)
    engine = Engine(store, folder, options=EngineOptions(inline=True, max_batch=BATCH))
    spec = load_pipeline_text(FIVE_STATES, "five.yaml", engine.registry)
    engine.open()
    for start in range(0, runs, BATCH):
        ids = [f"r{i}" for i in range(start, min(runs, start + BATCH))]
        engine.start_runs(spec, [{} for _ in ids], ids)
    engine.close()
    store.close()


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "CERTWRIGHT_LIVE_DIR": str(folder / "live"),
            "CERTWRIGHT_CACHE_DIR": str(folder / "cache"),
            "CERTWRIGHT_SYSTEM_CONFIG": str(folder / "no-system-config.yaml"),
            "CERTWRIGHT_LOG_LEVEL": "warning"}


def _certwright() -> list[str]:
    script = Path(sys.executable).parent / "certwright"
    return [str(script)] if script.exists() else [sys.executable, "-m", "certwright"]


def _count(pg: Cluster, sql: str) -> int:
    return int(pg.sql(sql))


def drive(pg: Cluster, url: str, schema: str, daemons: int, runs: int, folder: Path,
          timeout: float) -> dict[str, Any]:
    """Start ``daemons`` daemons on the store and wait until every run has succeeded."""
    created = int(pg.sql(f"SELECT coalesce(max(seq), 0) FROM {schema}.journal"))
    commits0, rows0 = pg_counters(pg)
    cpu0 = server_cpu_s(pg)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    for i in range(daemons):
        state = folder / f"daemon{i}"
        state.mkdir()
        log = (folder / f"daemon{i}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen(
            [*_certwright(), "--state-dir", str(state), "daemon", "--store", url],
            env=_env(folder), stdout=log, stderr=subprocess.STDOUT))
    done_sql = f"SELECT count(*) FROM {schema}.runs WHERE status = 'succeeded'"
    end = time.monotonic() + timeout
    refused = None
    try:
        while _count(pg, done_sql) < runs:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    logs[i].flush()
                    words = (folder / f"daemon{i}.log").read_text(errors="replace").strip()
                    refused = f"daemon {i} exited ({proc.returncode}): {words[-300:]}"
            if refused:
                break
            if time.monotonic() > end:
                raise SystemExit(f"{daemons} daemon(s): only {_count(pg, done_sql)} of "
                                 f"{runs} runs done after {timeout:.0f} s")
            time.sleep(0.25)
        daemon_cpu = sum(_live_cpu_s(p.pid) for p in procs if p.poll() is None)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    if refused:
        return {"refused": refused}
    time.sleep(0.5)  # the daemons' backends end and are reaped: their CPU is counted
    commits1, rows1 = pg_counters(pg)
    cpu1 = server_cpu_s(pg)
    span = pg.sql(
        f"SELECT count(*), EXTRACT(EPOCH FROM max(at::timestamptz) - min(at::timestamptz)) "
        f"FROM {schema}.journal WHERE kind = 'entered' AND seq > {created}")
    count, seconds = span.split("|")
    transitions = int(count)
    return {"transitions": transitions, "seconds": float(seconds),
            "transitions_per_s": transitions / float(seconds),
            "pg_commits": commits1 - commits0, "pg_rows": rows1 - rows0,
            "pg_cpu_s": cpu1 - cpu0, "daemon_cpu_s": daemon_cpu}


def raw_commits_per_s(pg: Cluster, row_bytes: int, budget_s: float = 15.0,
                      most: int = 200_000) -> float:
    """Commits per second of a plain psycopg loop, one journal-sized row per commit."""
    import psycopg
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TABLE raw_journal (seq BIGINT GENERATED BY DEFAULT AS IDENTITY "
                     "PRIMARY KEY, run_id TEXT, at TEXT, kind TEXT, data TEXT)")
        payload = "x" * row_bytes
        t0 = time.perf_counter()
        n = 0
        while n < most and time.perf_counter() - t0 < budget_s:
            conn.execute("INSERT INTO raw_journal(run_id, at, kind, data) "
                         "VALUES (%s, %s, %s, %s)",
                         (f"r{n}", "2026-01-01T00:00:00.000000Z", "entered", payload))
            n += 1
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE raw_journal")
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--daemons", default="1,2,3", help="daemon counts, comma-separated")
    ap.add_argument("--failover-runs", type=int, default=1000,
                    help="runs in flight for the failover figure (0: none)")
    ap.add_argument("--lease", type=float, default=15.0, help="the daemons' lease, seconds")
    ap.add_argument("--mails", type=int, default=500, help="mails for the latency (0: none)")
    ap.add_argument("--rate", type=float, default=20.0, help="mails delivered a second")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds one daemon count may take at the most")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.daemons.split(",") if c.strip()]
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    result: dict[str, Any] = {"runs": args.runs, "daemons": counts}
    root = Path(tempfile.mkdtemp(prefix="certwright-bench-cluster-"))
    try:
        with cluster(durable=True) as pg:
            row_bytes = 200
            for n in counts:
                schema = f"bench{n}"
                pg.sql(f"CREATE SCHEMA {schema}")
                url = pg.url() + "&options=" + f"-csearch_path%3D{schema}"
                folder = root / f"n{n}"
                folder.mkdir()
                create_runs(url, args.runs, folder / "creator")
                settle_disk()
                got = drive(pg, url, schema, n, args.runs, folder, args.timeout)
                if "refused" in got:
                    result[f"transitions_per_s_{n}"] = None
                    result[f"refused_{n}"] = got["refused"]
                    continue
                result[f"transitions_per_s_{n}"] = round(got["transitions_per_s"], 1)
                per = got["transitions"]
                result[f"transitions_{n}"] = per
                result[f"pg_commits_per_transition_{n}"] = round(got["pg_commits"] / per, 3)
                result[f"pg_rows_per_transition_{n}"] = round(got["pg_rows"] / per, 2)
                result[f"pg_cpu_ms_per_transition_{n}"] = round(got["pg_cpu_s"] / per * 1e3, 3)
                result[f"daemon_cpu_ms_per_transition_{n}"] = round(
                    got["daemon_cpu_s"] / per * 1e3, 3)
                if n == counts[0]:
                    row_bytes = int(pg.sql(f"SELECT avg(length(data))::int FROM "
                                           f"{schema}.journal"))
            if args.failover_runs:
                from cluster_failover import failover
                pg.sql("CREATE SCHEMA failover")
                folder = root / "failover"
                folder.mkdir()
                settle_disk()
                result.update(failover(
                    pg, pg.url() + "&options=-csearch_path%3Dfailover", "failover", folder,
                    _certwright(), _env(folder), args.failover_runs, args.lease))
            if args.mails:
                from cluster_mail import mail_latency
                pg.sql("CREATE SCHEMA mail")
                folder = root / "mail"
                folder.mkdir()
                settle_disk()
                result.update(mail_latency(
                    pg, pg.url() + "&options=-csearch_path%3Dmail", "mail", folder,
                    _certwright(), _env(folder), args.mails, args.rate))
            settle_disk()
            raw = raw_commits_per_s(pg, row_bytes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["pg_raw_commits_per_s"] = round(raw, 1)
    first = result.get("transitions_per_s_1")
    result["ratio_to_raw_1"] = round(first / raw, 3) if first else None
    three = result.get("transitions_per_s_3")
    result["scaling_3_over_1"] = round(three / first, 3) if first and three else None
    result["goals"] = {"ratio_to_raw_1": ">= 0.5", "mail_to_transition_p99_ms": "<= 20",
                       "failover_s": f"<= {args.lease + 2:g} (lease_s + 2)"}
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>34}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
