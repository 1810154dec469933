"""The hostile-input benchmark still runs: a tiny size, one repeat, valid JSON out.

Only its shape is checked (exit status, the JSON keys, a figure per case); its timings are
for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "yaml_cacert", "yaml_duplicate_keys", "yaml_billion_laughs", "yaml_string_bomb",
    "yaml_python_apply",
    *(f"yaml_tag_{i}" for i in range(5)),
    *(f"yaml_deep_{k}" for k in ("flow_lists", "flow_maps", "block_lists", "block_maps")),
    "yaml_too_large", "mail_too_large", "mail_deep_100", "mail_deep_1000", "mail_deep_20000",
    *(f"mail_html_{k}" for k in ("open_tags", "lt", "open_comment", "many_links")),
}


def test_hostile_inputs_bench_prints_one_json_object() -> None:
    """`bench/hostile_inputs.py --json` exits 0 and prints one JSON object with every case,
    each with its time, outcome and work counters; the refusals are the expected ones."""
    done = subprocess.run(
        [sys.executable, "bench/hostile_inputs.py", "--json", "--scale", "0.0001",
         "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert set(result) == {"scale", "repeat", "cases", "goals"}
    assert result["repeat"] == 1
    assert set(result["cases"]) == CASES
    for name, case in result["cases"].items():
        assert {"ms", "outcome", "work"} <= set(case), name
        assert isinstance(case["ms"], (int, float)) and case["ms"] >= 0, name
        assert isinstance(case["work"], dict), name
        expect_parsed = name == "yaml_cacert" or name.startswith("mail_html_")
        assert case["outcome"].startswith("parsed" if expect_parsed else "refused: "), name
    for name in CASES:
        if name.startswith("mail_html_"):
            assert {"time_ratio", "work_ratio"} <= set(result["cases"][name])


def test_hostile_inputs_bench_prints_figures_as_text() -> None:
    """Without --json it prints one line per case and the goals."""
    done = subprocess.run(
        [sys.executable, "bench/hostile_inputs.py", "--scale", "0.0001", "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(CASES) + 1
    assert lines[-1].strip().startswith("goals:")
