"""Wake-ups between daemons on PostgreSQL: from a run made by another process to its step.

Two ``certwright daemon --store postgresql://...`` processes whose fallback polls are
``--poll`` seconds apart (their lease and ``sync_interval``: free runs are looked for every
third of that) serve one store; this process then makes ``--runs`` runs (default 50) of a
one-step pipeline, one per transaction, ``--gap`` seconds apart (default 0.2), as a command
that hands runs to the daemons would. Each latency is from the run's ``created`` entry to
its ``step_started`` entry (both the journal's ``at``, one machine's clock), i.e. the
notice's delivery, a daemon's claim (``FOR UPDATE SKIP LOCKED``), the adoption and the
commit of the step's intent. Without the wake-up it would be up to ``poll / 3`` seconds.

    python bench/cluster_wake.py --json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import _certwright, _env  # noqa: E402  (bench/cluster.py: how daemons start)

from tests.support.postgres import cluster  # noqa: E402  (after the path)

ONE_STEP = """
pipeline: one
version: 1
initial: working
states:
  working:
    run:
      - step: shell
        with: {argv: ["true"]}
    next: finished
  finished: {final: success}
"""


def _ms(at: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(at).timestamp() * 1000


def measure(runs: int, gap: float, poll: float, folder: Path) -> dict[str, Any]:
    """Start the daemons, make the runs, and read the latencies from the journal."""
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.engine.run.runner import Engine
    from certwright.state.postgres import PostgresStore
    with cluster(durable=True) as pg:
        pg.sql("CREATE SCHEMA wake")
        url = pg.url() + "&options=" + "-csearch_path%3Dwake"
        PostgresStore(url).close()  # its tables, before the daemons look
        config = folder / "config.yaml"
        config.write_text(f"daemon:\n  sync_interval: {poll}s\n  lease: {poll}s\n")
        procs = []
        for i in range(2):
            state = folder / f"daemon{i}"
            state.mkdir()
            log = (folder / f"daemon{i}.log").open("wb")
            procs.append(subprocess.Popen(
                [*_certwright(), "--state-dir", str(state), "--config", str(config),
                 "daemon", "--store", url], env=_env(folder), stdout=log,
                stderr=subprocess.STDOUT))
        try:
            end = time.monotonic() + 120
            while int(pg.sql("SELECT count(*) FROM wake.daemons")) < 2:
                if time.monotonic() > end or any(p.poll() is not None for p in procs):
                    raise SystemExit("the daemons did not come up")
                time.sleep(0.1)
            time.sleep(1.0)  # past their first keep and sync
            store = PostgresStore(url)
            engine = Engine(store, folder / "maker")
            spec = load_pipeline_text(ONE_STEP, "one.yaml", engine.registry)
            for i in range(runs):
                engine.start_runs(spec, [{}], [f"w{i}"])
                time.sleep(gap)
            engine.close()
            store.close()
            end = time.monotonic() + max(60.0, poll)
            done = "SELECT count(*) FROM wake.runs WHERE status = 'succeeded'"
            while int(pg.sql(done)) < runs and time.monotonic() < end:
                time.sleep(0.1)
            rows = pg.sql("SELECT run_id, kind, min(at) FROM wake.journal WHERE kind IN "
                          "('created', 'step_started') GROUP BY run_id, kind")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(60)
    at: dict[tuple[str, str], float] = {}
    for line in rows.splitlines():
        rid, kind, when = line.split("|")
        at[(rid, kind)] = _ms(when)
    out = sorted(at[(f"w{i}", "step_started")] - at[(f"w{i}", "created")] for i in range(runs)
                 if (f"w{i}", "step_started") in at)
    if len(out) < runs:
        raise SystemExit(f"only {len(out)} of {runs} runs were started by a daemon")
    return {"runs": runs, "gap_s": gap, "fallback_poll_s": round(poll / 3, 1),
            "run_to_step_p50_ms": round(statistics.median(out), 1),
            "run_to_step_p99_ms": round(out[min(len(out) - 1, int(len(out) * 0.99))], 1),
            "run_to_step_max_ms": round(out[-1], 1), "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between two runs made")
    ap.add_argument("--poll", type=float, default=90.0,
                    help="the daemons' lease and sync_interval, seconds (their fallback)")
    args = ap.parse_args(argv)
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="certwright-bench-wake-") as tmp:
        result = measure(args.runs, args.gap, args.poll, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
