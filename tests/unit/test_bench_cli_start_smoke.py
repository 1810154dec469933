"""The CLI start-up benchmark still runs: one run per command, valid JSON out.

Only its shape is checked (exit status, the keys, a figure per command, the import lines
parsed); its timings are for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"bare_interpreter", "help", "version", "status"}


def test_cli_start_bench_prints_one_json_object() -> None:
    """`bench/cli_start.py --json --runs 1` exits 0 and prints one JSON object: each command
    with its wall and CPU times, its imports (parsed from -X importtime), and the goal."""
    done = subprocess.run([sys.executable, "bench/cli_start.py", "--json", "--runs", "1",
                           "--python", sys.executable],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert {"python", "runs", "budget_ms", "load_before", "load_after", "commands",
            "goals"} <= set(result)
    assert set(result["commands"]) >= COMMANDS
    for name, case in result["commands"].items():
        assert set(case["wall_ms"]) == {"min", "median", "max"}, name
        assert case["wall_ms"]["min"] > 0, name
        assert case["cpu_ms"] >= 0, name
        assert isinstance(case["top_imports"], dict), name
    assert result["commands"]["help"]["import_ms"] > 0
    assert "certwright.engine.cli.main" in json.dumps(result["commands"]["help"])
    assert set(result["goals"]) == {"max_median_ms", "met"}


def test_cli_start_bench_prints_figures_as_text() -> None:
    """Without --json: a header, a line per command, and the goal."""
    done = subprocess.run([sys.executable, "bench/cli_start.py", "--runs", "1",
                           "--python", sys.executable],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("python ")
    assert {line.split()[0] for line in lines[1:-1]} >= COMMANDS
    assert lines[-1].startswith("goals:")
