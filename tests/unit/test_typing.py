"""The whole package stays clean under mypy --strict (the configuration in pyproject.toml)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_passes_mypy_strict():
    done = subprocess.run(["bash", "scripts/typecheck.sh", "--no-error-summary"], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
