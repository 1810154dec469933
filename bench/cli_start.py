"""CLI start-up benchmark: how long `certwright --help`, `--version` and `status` take.

Each command runs ``--runs`` times (default 20) as a fresh process of the venv's
interpreter (``python -m certwright ...``; ``status`` on an empty state dir), beside a bare
start of the same interpreter (``python -c pass``) and the console script
(``certwright --help``), so the figures separate what the interpreter costs from what our
imports cost. Then each command once under ``python -X importtime``: the total of its
imports and the heaviest top-level ones, which is what to look at when a figure grows.

Figures per command: ``wall_ms`` (min, median, max over the runs), ``cpu_ms`` (median
user+system of the child), ``import_ms`` and ``top_imports``; and the machine's load
average (other work on the machine moves every figure: compare runs of one load).
Goal: the median wall time of ``--help``, ``--version`` and ``status`` at most
``--budget-ms`` (default 150).

Usage: python bench/cli_start.py [--json] [--runs N] [--budget-ms MS] [--python PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_COMMANDS = ("help", "version", "status")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


def _python() -> Path:
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def commands(python: Path, state_dir: Path) -> dict[str, list[str]]:
    """Each measured command line, by name."""
    cli = [str(python), "-m", "certwright"]
    script = python.parent / "certwright"
    out = {"bare_interpreter": [str(python), "-c", "pass"],
           "help": [*cli, "--help"], "version": [*cli, "--version"],
           "status": [*cli, "--state-dir", str(state_dir), "status"]}
    if script.exists():
        out["script_help"] = [str(script), "--help"]
    return out


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTWRIGHT_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(folder / "config")
    env["XDG_STATE_HOME"] = str(folder / "xdg-state")
    return env


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_runs(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    """Wall (min, median, max) and median CPU milliseconds of ``runs`` runs of ``argv``."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        c0, w0 = _child_cpu(), time.perf_counter()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        walls.append(time.perf_counter() - w0)
        cpus.append(_child_cpu() - c0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace')[-500:]}")
    return {"wall_ms": {"min": round(min(walls) * 1e3, 1),
                        "median": round(statistics.median(walls) * 1e3, 1),
                        "max": round(max(walls) * 1e3, 1)},
            "cpu_ms": round(statistics.median(cpus) * 1e3, 1)}


def import_times(python: Path, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``-X importtime`` of one run: total milliseconds of top-level imports, and the five
    heaviest of them (cumulative). A console script is run by ``python`` itself."""
    prefix = [str(python), "-X", "importtime"]
    command = [*prefix, *argv[1:]] if argv[0] == str(python) else [*prefix, *argv]
    done = subprocess.run(command, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    top: list[tuple[int, str]] = []
    for line in done.stderr.splitlines():
        found = _IMPORT_LINE.match(line)
        if found and not found.group(3):  # no indentation: imported by the program itself
            top.append((int(found.group(2)), found.group(4)))
    heaviest = sorted(top, reverse=True)[:5]
    return {"import_ms": round(sum(us for us, _ in top) / 1e3, 1),
            "top_imports": {name: round(us / 1e3, 1) for us, name in heaviest}}


def figures(python: Path, runs: int, budget_ms: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="cw-bench-cli-"))
    try:
        env = _env(folder)
        state = folder / "state"  # empty: status opens (creates) an empty store
        out: dict[str, Any] = {"python": str(python), "runs": runs, "budget_ms": budget_ms,
                               "load_before": [round(x, 2) for x in os.getloadavg()]}
        cases: dict[str, Any] = {}
        for name, argv in commands(python, state).items():
            subprocess.run(argv, env=env, capture_output=True, check=False)  # warm caches
            cases[name] = {**time_runs(argv, runs, env), **import_times(python, argv, env)}
        out["commands"] = cases
        out["load_after"] = [round(x, 2) for x in os.getloadavg()]
        bare = cases["bare_interpreter"]["wall_ms"]["median"]
        for case in cases.values():
            case["over_bare_ms"] = round(case["wall_ms"]["median"] - bare, 1)
        worst = max(cases[c]["wall_ms"]["median"] for c in GOAL_COMMANDS)
        out["goals"] = {"max_median_ms": worst, "met": worst <= budget_ms}
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--budget-ms", type=float, default=150.0)
    ap.add_argument("--python", type=Path, default=_python(),
                    help="the interpreter to measure (default: the repository's .venv)")
    args = ap.parse_args(argv)
    result = figures(args.python, max(1, args.runs), args.budget_ms)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"python {result['python']}, {result['runs']} runs each, load "
          f"{result['load_before']} -> {result['load_after']}")
    for name, case in result["commands"].items():
        wall = case["wall_ms"]
        tops = ", ".join(f"{m} {ms}" for m, ms in case["top_imports"].items())
        print(f"{name:17} wall {wall['min']:6.1f} / {wall['median']:6.1f} / {wall['max']:6.1f} "
              f"ms (min/median/max)  cpu {case['cpu_ms']:6.1f} ms  imports "
              f"{case['import_ms']:6.1f} ms  [{tops}]")
    goals = result["goals"]
    print(f"goals: median of --help, --version, status <= {result['budget_ms']:g} ms: "
          f"{goals['max_median_ms']} ms, {'met' if goals['met'] else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
