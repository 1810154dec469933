"""``certwright status`` and ``certwright history``: what the store says of runs.

Both only read, so they work on a read-only store and while a daemon serves it; ``status``
in a state folder without a store shows no runs and creates nothing.

Hazard: ``status`` is one of the commands that must start at once (bench/cli_start.py):
this module imports the store and nothing of the runner, the log library or the pipeline
model at its top; the renewal schedule's reader is imported only when the store holds a
certificate.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwright.clock import clock_from_env, parse_instant
from certwright.engine.run.summary import summary
from certwright.state.locks import daemon_lock, run_lock
from certwright.state.records import FINISHED, RUNNING, RunRecord

if TYPE_CHECKING:
    from certwright.state.base import Store

EXIT_OK = 0


def _renewals(store: Store | None) -> list[dict[str, Any]]:
    """The renewal schedule (from the inventory); none, and nothing imported, when the
    store holds no certificate."""
    if store is None or getattr(store, "outdated", False) or not store.list_certificates():
        return []
    from certwright.engine.daemon.renew import schedule
    return schedule(store)


def _interrupted(state_dir: Path, run: RunRecord, daemon: int | None) -> bool:
    """A run stored as running that nothing drives: its process died (killed, or a store
    error ended it) and no daemon serves the store to pick it up."""
    return (run.status == RUNNING and not run.wants_host and not daemon
            and run_lock(state_dir, run.id).holder() is None)


def host_note(run: RunRecord, serving: set[str]) -> str:
    """What a run waiting for its host waits for, and whether a daemon of that host
    serves the store now (by the daemons' heartbeats)."""
    host = run.wants_host
    if host in serving:
        return f"waiting for host {host} (a daemon of {host} serves this store)"
    return (f"waiting for host {host} (no daemon of {host} serves this store: start one, "
            f"or `certwright move {run.id} --host ...`)")


def _alive_here(host: str, pid: int) -> bool:
    """False when ``pid`` is known not to run on this host (a row of another host, or a
    pid we may not signal, counts as alive: only its heartbeat can tell)."""
    import os
    import socket
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _daemons(store: Store | None, now: datetime) -> list[dict[str, Any]]:
    """The daemons' heartbeat rows, each with its age and state: serving, stale (no
    heartbeat for 3 intervals: hung or stopped) or gone (its pid is not running here)."""
    if store is None:
        return []
    out = []
    for d in store.list_daemons():
        age = (now - parse_instant(d.heartbeat)).total_seconds()
        state = "gone" if not _alive_here(d.machine or d.host, d.pid) \
            else "stale" if d.is_stale(age) else "serving"
        out.append({**vars(d), "heartbeat_age_s": round(age, 1),
                    "stale": state != "serving", "state": state})
    return out


def _print_daemons(rows: list[dict[str, Any]]) -> None:
    from certwright.engine.model.spec import format_duration
    table = [("HOST", "PID", "STARTED", "LAST HEARTBEAT", "RUNS", "LEASES", "STATE")]
    for d in rows:
        age = d["heartbeat_age_s"]
        ago = f"{format_duration(age)} ago" if age >= 1 else "now"
        state = d["state"] if d["state"] == "serving" else \
            f"{d['state']} (no heartbeat for {format_duration(max(age, 0))})"
        table.append((d["host"], str(d["pid"]), f"{d['started'][:16]}Z",
                      f"{d['heartbeat'][:19]}Z ({ago})", str(d["runs"]), str(d["leases"]),
                      state))
    _print_table(table)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_status(args: argparse.Namespace) -> int:
    runs: list[RunRecord] = []
    store: Store | None = None
    from certwright.engine.cli.storeargs import store_exists
    if args.run_id or store_exists(args):
        from certwright.engine.cli.storeargs import open_store_of
        store = open_store_of(args, readonly=True)
        if args.run_id:
            runs = [store.load_run(args.run_id)]
        else:
            runs = [r for r in store.list_runs() if args.all or r.status not in FINISHED]
    daemon = daemon_lock(args.state_dir).holder()
    served_from = ""
    if not daemon and hasattr(store, "daemon_holder"):  # a PostgreSQL store's own lock
        pid, host = store.daemon_holder()  # type: ignore[union-attr]
        daemon, served_from = pid, f" on {host}, another state folder" if pid else ""
    stopped = {r.id for r in runs if _interrupted(args.state_dir, r, daemon)}
    renewals = _renewals(store)
    now = clock_from_env().now()
    daemons = _daemons(store, now)
    serving = {str(d["host"]) for d in daemons if d["state"] == "serving"}
    notes = {r.id: host_note(r, serving) for r in runs if r.wants_host}
    if args.json:
        print(json.dumps({"daemon_pid": daemon, "daemons": daemons, "renewals": renewals,
                          "runs": [{**summary(r), "interrupted": r.id in stopped,
                                    "host_served": (r.wants_host in serving
                                                    if r.wants_host else None)}
                                   for r in runs]}, indent=2))
        return EXIT_OK
    print(f"daemon: {f'serving (pid {daemon}{served_from})' if daemon else 'not running'}")
    if daemons and not args.run_id:
        _print_daemons(daemons)
    rows = [("RUN", "PIPELINE", "STATE", "STATUS", "WAITING FOR", "DEADLINE", "HOST")]
    for r in runs:
        deadline = ""
        if r.deadline:
            left = (parse_instant(r.deadline) - now).total_seconds()
            from certwright.engine.model.spec import format_duration
            deadline = f"{r.deadline[:16]}Z ({format_duration(left)} left)" if left > 0 \
                else f"{r.deadline[:16]}Z (passed)"
        waiting = (r.waiting or (f"retry: {r.error}" if r.status == "backoff" else ""))[:60]
        if r.alarms:
            waiting = f"ALARM: {r.alarms[-1]}"[:60]
        status = r.status
        if r.id in stopped:
            status, waiting = "interrupted", f"resume with: certwright resume {r.id}"
        rows.append((r.id, r.pipeline, r.state, status, waiting, deadline, r.host or "any"))
    _print_table(rows)
    for rid, note in notes.items():
        print(f"{rid}: {note}")
    if args.run_id and runs[0].error:
        print(f"error: {runs[0].error}")
    if renewals and not args.run_id:
        print("renewals:")
        for item in renewals:
            when = f"{str(item['next_at'])[:16]}Z" if item["next_at"] else "when it ends"
            line = f"  {item['name']}: {item['status']}, next {when}"
            if item["status"] == "revoked":
                line = f"  {item['name']}: revoked, never renewed"
            if item.get("attempts"):
                line += (f" (failed {item['attempts']}x: "
                         f"{str(item.get('last_error') or '')[:60]})")
            print(line)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from certwright.engine.cli.storeargs import open_store_of
    store = open_store_of(args, readonly=True)
    store.load_run(args.run_id)
    entries = store.journal(args.run_id)
    if args.json:
        print(json.dumps([{"seq": e.seq, "at": e.at, "kind": e.kind, "data": e.data}
                          for e in entries], indent=2))
        return EXIT_OK
    for e in entries:
        print(f"{e.seq:>6}  {e.at[:23]}Z  {e.kind:<13} {_describe(e.kind, e.data)}")
    return EXIT_OK


def _describe(kind: str, d: dict[str, Any]) -> str:
    if kind == "created":
        return f"pipeline {d['pipeline']} ({d['spec_hash'][:12]})"
    if kind == "entered":
        extra = f" [{d['final']}]" if d.get("final") else ""
        dl = f" deadline {d['deadline'][:19]}Z" if d.get("deadline") else ""
        return f"{d.get('from') or '-'} -> {d['to']} on {d['trigger']}{extra}{dl}"
    if kind == "step_started":
        rec = " (recovering)" if d.get("recovering") else ""
        on = f" on {d['host']}" if d.get("host") else ""
        return f"{d['step']} attempt {d['attempt']} key {d['key']}{on}{rec}"
    if kind == "host_awaited":
        return f"{d['step']} waits for host {d['host']} (not started on {d['seen_on'] or '?'})"
    if kind == "moved":
        return f"host {d['previous'] or 'any'} -> {d['host']} by {d['by'] or '?'}"
    if kind == "step_done":
        return f"{d['step']} done " + json.dumps(d["outputs"], default=str)[:120]
    if kind == "step_waiting":
        return f"{d['step']} waiting for {d['waiting']}"
    if kind == "step_failed":
        retry = f"; retry at {d['retry_at'][:19]}Z" if d.get("retry_at") else ""
        return f"{d['step']} attempt {d['attempt']} failed: {d['error']}{retry}"
    return json.dumps(d, default=str)[:160]
