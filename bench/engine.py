"""Engine benchmark: transition throughput against raw SQLite, parked-run memory, resume time.

Figures (all measured in this one script, so the ratios are robust to a noisy machine):

* ``transitions_per_s``: state entries per second while driving ``--runs`` runs (default
  10,000) of a 5-state pipeline with no-op steps to the end, in one process, with the
  store's default durability (WAL, synchronous=FULL) and the worker pool.
* ``raw_sqlite_commits_per_s``: a plain loop committing journal-sized rows one per
  transaction with the same pragmas; ``ratio_to_raw`` = the first over the second (goal
  >= 0.5). The engine commits a whole batch of runs' changes at once (group commit), which
  is why it can exceed 1.
* ``bytes_per_parked_run``: Python heap growth (tracemalloc) per run for an engine that has
  loaded a store with ``--parked`` (default 10,000) runs waiting for mail (goal <= 4096).
* ``resume_100k_s``: seconds to open a store holding ``--resume`` (default 100,000) parked
  runs and be ready to dispatch events to them (goal <= 2).

Usage: python bench/engine.py [--json] [--runs N] [--parked N] [--resume N]
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from certwright.clock import FakeClock
from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import BaseStep, StepContext, Wait
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.events import mail_key
from certwright.state.sqlite import SQLiteStore

FIVE_STATES = """
pipeline: five
version: 1
initial: s1
states:
  s1: {run: [noop], next: s2}
  s2: {run: [noop], next: s3}
  s3: {run: [noop], next: s4}
  s4: {run: [noop], next: s5}
  s5: {final: true}
"""

PARKED = """
pipeline: parked
version: 1
initial: probed
states:
  probed:
    run: [bench.wait_mail]
    timeout: {after: 2d, to: expired}
    next: verified
  expired: {final: failure}
  verified: {final: true}
"""


class BenchWaitMail(BaseStep):
    """Parks on a mail correlation key, as wait.mail does, without touching a Maildir."""

    name: ClassVar[str] = "bench.wait_mail"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}

    def run(self, ctx: StepContext) -> Wait:
        return Wait(description="mail", correlations=(mail_key(f"postmaster@{ctx.run_id}.test"),))


def _registry() -> Registry:
    reg = Registry(plugins=False)
    reg.register(BenchWaitMail)
    return reg


def _engine(folder: Path, reg: Registry, **options: Any) -> Engine:
    store = SQLiteStore(folder / "certwright.sqlite")
    return Engine(store, folder, registry=reg, clock=FakeClock(),
                  spec_loader=lambda t, s: load_pipeline_text(t, s, reg),
                  options=EngineOptions(**options))


def bench_transitions(runs: int, folder: Path) -> dict[str, float]:
    reg = _registry()
    spec = load_pipeline_text(FIVE_STATES, "five.yaml", reg)
    engine = _engine(folder, reg, workers=2)
    engine.open()
    t0 = time.perf_counter()
    for start in range(0, runs, 1000):  # as an inbox of requests would arrive, in batches
        batch = range(start, min(runs, start + 1000))
        engine.start_runs(spec, [{} for _ in batch], [f"r{i}" for i in batch])
        engine.pump()
    engine.run_until_idle()
    elapsed = time.perf_counter() - t0
    done = engine.store.run_ids(["succeeded"])
    if len(done) != runs:
        raise SystemExit(f"only {len(done)} of {runs} runs finished")
    rows = engine.store._db.execute("SELECT count(*), avg(length(data)) FROM journal").fetchone()
    engine.close()
    engine.store.close()
    return {"transitions": runs * 5.0, "seconds": elapsed, "journal_rows": float(rows[0]),
            "journal_row_bytes": float(rows[1]), "transitions_per_s": runs * 5 / elapsed}


def bench_raw(rows: int, row_bytes: int, folder: Path, budget_s: float = 20.0) -> float:
    """Commits per second of a plain loop, one row per transaction, same pragmas."""
    db = sqlite3.connect(folder / "raw.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, "
               "at TEXT, kind TEXT, data TEXT)")
    payload = "x" * row_bytes
    t0 = time.perf_counter()
    n = 0
    while n < rows and time.perf_counter() - t0 < budget_s:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO journal(run_id, at, kind, data) VALUES(?,?,?,?)",
                   (f"r{n}", "2026-01-01T00:00:00.000000Z", "entered", payload))
        db.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - t0
    db.close()
    return n / elapsed


def _park(n: int, folder: Path) -> None:
    reg = _registry()
    spec = load_pipeline_text(PARKED, "parked.yaml", reg)
    engine = _engine(folder, reg, inline=True, max_batch=5000)
    engine.open()
    batch = 5000
    for start in range(0, n, batch):  # created and entered, one commit per batch, not driven
        ids = [f"p{i}" for i in range(start, min(n, start + batch))]
        engine.start_runs(spec, [{} for _ in ids], ids)
    engine.close()
    engine.store.close()
    # Now drive each to its wait (the step parks on a correlation key).
    engine = _engine(folder, reg, inline=True, max_batch=5000)
    engine.open()
    engine.run_until_idle()
    waiting = engine.store.run_ids(["waiting"])
    engine.close()
    engine.store.close()
    if len(waiting) != n:
        raise SystemExit(f"only {len(waiting)} of {n} runs parked")


def bench_parked_memory(n: int, folder: Path) -> float:
    _park(n, folder)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    engine = _engine(folder, _registry())
    engine.open()
    # dispatch one event to prove the engine is ready, then measure what it keeps
    engine.submit(__import__("certwright.events", fromlist=["Event"]).Event(
        kind="mail", key=mail_key("postmaster@p0.test")))
    engine.run_until_idle()
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    engine.close()
    engine.store.close()
    return grown / n


def bench_resume(n: int, folder: Path) -> float:
    _park(n, folder)
    gc.collect()
    t0 = time.perf_counter()
    engine = _engine(folder, _registry())
    engine.open()
    engine.submit(__import__("certwright.events", fromlist=["Event"]).Event(
        kind="mail", key=mail_key("postmaster@p1.test")))
    engine.pump()
    elapsed = time.perf_counter() - t0
    engine.close()
    engine.store.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--parked", type=int, default=10_000)
    ap.add_argument("--resume", type=int, default=100_000)
    args = ap.parse_args(argv)
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    root = Path(tempfile.mkdtemp(prefix="certwright-bench-"))
    try:
        folders = {k: root / k for k in ("tr", "raw", "mem", "resume")}
        for f in folders.values():
            f.mkdir()
        tr = bench_transitions(args.runs, folders["tr"])
        raw = bench_raw(int(tr["journal_rows"]), int(tr["journal_row_bytes"]), folders["raw"])
        mem = bench_parked_memory(args.parked, folders["mem"])
        resume = bench_resume(args.resume, folders["resume"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "runs": args.runs,
        "transitions_per_s": round(tr["transitions_per_s"], 1),
        "raw_sqlite_commits_per_s": round(raw, 1),
        "ratio_to_raw": round(tr["transitions_per_s"] / raw, 3),
        "parked_runs": args.parked,
        "bytes_per_parked_run": round(mem, 1),
        "resume_runs": args.resume,
        "resume_100k_s": round(resume, 3),
        "goals": {"ratio_to_raw": ">= 0.5", "bytes_per_parked_run": "<= 4096",
                  "resume_100k_s": "<= 2"},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
