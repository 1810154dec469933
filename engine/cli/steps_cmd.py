"""``certwright steps``: every step the registry knows, where it runs, what it does.

"where" is ``host`` for a host-bound step (``host_bound``: it touches the machine it runs
on, so it runs only on a daemon of its run's host; see :mod:`engine.run.hosts`) and
``any`` for the others (CA and ACME calls, mail waits, timers), which any daemon serving
the store may run. Plugins' steps are listed too; one that cannot be imported is listed
with the error instead of its description, and the command still succeeds.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK = 0


def register(sub: Any) -> None:
    s = sub.add_parser("steps", help="list the steps pipelines may use, and where each runs "
                                     "(host: only on its run's host; any: on any daemon)")
    s.add_argument("--json", action="store_true", help="one JSON list")
    s.set_defaults(func=cmd_steps, logs=False)


def step_rows() -> list[dict[str, Any]]:
    """name, where (host|any), host_bound and description of every registered step."""
    from certwright.engine.plugins.registry import Registry
    from certwright.engine.run.hosts import host_bound
    registry = Registry()
    rows: list[dict[str, Any]] = []
    for name in registry.names():
        try:
            step = registry.get(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
            rows.append({"name": name, "where": "?", "host_bound": None,
                         "description": f"cannot be loaded: {exc}"})
            continue
        bound = host_bound(type(step))
        rows.append({"name": name, "where": "host" if bound else "any", "host_bound": bound,
                     "description": str(getattr(step, "description", "") or "")})
    return rows


def cmd_steps(args: argparse.Namespace) -> int:
    rows = step_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows) if rows else 4
    print(f"{'STEP'.ljust(width)}  WHERE  DESCRIPTION")
    for r in rows:
        print(f"{r['name'].ljust(width)}  {r['where'].ljust(5)}  {r['description']}".rstrip())
    return EXIT_OK
