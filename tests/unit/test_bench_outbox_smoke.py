"""The outbox benchmark still runs: a few messages, valid JSON out (shape only, no timings)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_outbox_bench_prints_one_json_object() -> None:
    """`bench/outbox.py --json` exits 0 and prints both paths' figures and the overhead."""
    done = subprocess.run(
        [sys.executable, "bench/outbox.py", "--json", "--messages", "10", "--threads", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert set(result) == {"messages", "threads", "direct", "outbox", "outbox_overhead_us"}
    for path in ("direct", "outbox"):
        assert {"msgs_per_s", "cpu_us_per_msg", "seconds"} <= set(result[path])
