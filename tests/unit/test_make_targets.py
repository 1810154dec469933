"""`make demo` installs the runtime dependencies only; the test targets add the extras."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = str(ROOT / "Makefile")


def _plan(target: str, venv: Path) -> str:
    """What ``make TARGET`` would run for a venv that does not exist yet (``make -n``)."""
    done = subprocess.run(["make", "-f", MAKEFILE, "-n", target, f"VENV={venv}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_demo_installs_no_test_extra_and_lint_adds_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    demo = _plan("demo", venv)
    assert "pip install --quiet -e ." in demo
    assert "[test]" not in demo
    lint = _plan("lint", venv)
    assert "-e '.[test]'" in lint
