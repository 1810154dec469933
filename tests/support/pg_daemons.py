"""Daemons on one PostgreSQL store, as the end-to-end tests start and read them: a daemon
process of its own state folder, runs made in the store by a process that is no daemon
(they wait to be taken), the store's rows, and the lease tenures of ``lease_log``.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.run.runner import Engine
from certwright.state import names as N
from certwright.state.postgres import PostgresStore
from tests.fixtures.daemon.harness import Proc, env_for, spawn, wait_for


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query on the store at ``url``."""
    store = PostgresStore(url)
    try:
        return store.query("reading", sql)
    finally:
        store.close()


def start_daemon(root: Path, url: str, name: str, daemon_args: Sequence[str] = (), *,
                 before: Sequence[str] = (), env: dict[str, str] | None = None) -> Proc:
    """``certwright daemon`` on the store, state folder ``root/name``, once it is ready.
    ``before``: global options before the command; ``daemon_args`` after it."""
    state = root / name
    proc = spawn(["--state-dir", str(state), "--store", url, *before, "--log-json", "daemon",
                  *daemon_args], env if env is not None else env_for(state),
                 root / f"{name}-{time.monotonic_ns()}.log")
    wait_for(lambda: "daemon_ready" in proc.text() or proc.popen.poll() is not None, 60,
             f"daemon {name} to be ready")
    assert proc.popen.poll() is None, proc.text()[-3000:]
    return proc


def make_runs(url: str, root: Path, text: str, source: str, inputs: list[dict[str, Any]],
              ids: list[str], **options: Any) -> None:
    """Runs of pipeline ``text`` made in the store (running, none driven yet)."""
    store = PostgresStore(url)
    try:
        engine = Engine(store, root / "maker")
        engine.start_runs(load_pipeline_text(text, source), inputs, ids, **options)
        engine.close()
    finally:
        store.close()


def started_on(url: str) -> dict[str, dict[str, set[str]]]:
    """run -> step id -> the hosts whose engines started it (the journal's
    ``step_started``)."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rid, data in rows(url, f"SELECT run_id, data FROM {N.T_JOURNAL} "
                                f"WHERE kind = 'step_started'"):
        d = json.loads(data)
        out[rid][d["step"]].add(d.get("host"))
    return out


def lease_tenures(url: str) -> dict[str, list[tuple[Any, Any, int]]]:
    """run -> its lease tenures (taken_at, ended_at, token), in the order they were taken."""
    out: dict[str, list[tuple[Any, Any, int]]] = defaultdict(list)
    for rid, token, taken, ended in rows(
            url, f"SELECT run_id, token, taken_at, ended_at FROM {N.T_LEASE_LOG}"):
        out[rid].append((taken, ended, token))
    for spans in out.values():
        spans.sort()
    return dict(out)
