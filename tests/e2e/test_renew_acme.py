"""`renew` on ACME certificates, against a real Pebble (http-01): `--force` renews into the
same folder; `--dry-run` refuses a directory without a known staging twin unless one is
given, and with one given it passes without touching the folder, inventory or accounts."""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_acme_cli import cert_dir, cli, run_args
from tests.integration.test_acme import Env, _start

pytestmark = pytest.mark.slow
NAME = "www.acme.test"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith("lock")}


def _inventory(state: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(state / "certwright.sqlite") as db:
        return list(db.execute("SELECT * FROM certificates ORDER BY name"))


def test_acme_renew_force_then_dry_runs_against_a_given_directory(env: Env) -> None:
    state = env.tmp / "state"
    done = cli(state, *run_args(env, NAME, "h1"))
    assert done.returncode == 0, done.stderr[-3000:]
    folder = cert_dir(env, "h1")
    first = _inventory(state)

    renewed = cli(state, "renew", NAME, "--force")
    assert renewed.returncode == 0, renewed.stderr[-3000:]
    assert f"renewing {NAME}: forced (pipeline acme, renews run h1)" in renewed.stdout
    assert f"{NAME}: renewed, serial " in renewed.stdout
    assert _inventory(state) != first
    assert len(list((folder / ".certwright" / "versions").iterdir())) == 1

    before = (_tree(folder), _inventory(state), _tree(state / "acme"))
    assert before[2], "the ACME account is stored under state/acme"
    refused = cli(state, "renew", "--dry-run")
    assert refused.returncode == 2, refused.stdout + refused.stderr[-2000:]
    assert "no staging directory is known for the ACME directory" in refused.stderr
    assert "--set directory=URL" in refused.stderr
    trial = cli(state, "renew", "--dry-run", "--set", f"directory={env.pebble.directory}")
    assert trial.returncode == 0, trial.stdout + trial.stderr[-3000:]
    assert f"dry run: {NAME}: passed every state" in trial.stdout
    assert (_tree(folder), _inventory(state), _tree(state / "acme")) == before
