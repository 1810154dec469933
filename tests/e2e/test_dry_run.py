"""`run --dry-run` and `renew --dry-run`: every state against a throwaway CA, the config
test run and the reload not, and nothing real changed (hashed before and after: the
certificate folders, the inventory and the runs, the CA's accounts and the client's)."""
from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from certwright.engine.cli.dryrun import trial_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.errors import InputError
from tests.e2e.test_renew_cli import NAME, _cli


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"
            and p.name != "lock"}


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def _everything(tmp_path: Path) -> dict[str, object]:
    """What a dry run must leave as it was."""
    state = tmp_path / "state"
    store, ca = state / "certwright.sqlite", state / "embedded" / "ca" / "ca.sqlite3"
    return {"live": _tree(tmp_path / "live"), "client accounts": _tree(state / "accounts"),
            "inventory": _rows(store, "SELECT * FROM certificates ORDER BY name"),
            "renewals": _rows(store, "SELECT * FROM renewals ORDER BY name"),
            "runs": _rows(store, "SELECT id, state, status FROM runs ORDER BY id"),
            "ca accounts": _rows(ca, "SELECT * FROM accounts ORDER BY 1"),
            "ca certificates": _rows(ca, "SELECT * FROM certificates ORDER BY 1")}


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """NAME installed for real (its reload and config test write marker files, removed)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    done = _cli(tmp_path, "run", "cacert", "-d", NAME, "--run-id", "first",
                "--set", f"reload_test=touch {markers / 'reload_test'}",
                "--set", f"reload=touch {markers / 'reload'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in markers.iterdir()} == {"reload_test", "reload"}
    for p in markers.iterdir():
        p.unlink()
    return markers


def _scratch(out: str) -> Path:
    found = re.search(r"in (\S*certwright-dry-run-\S+) \(", out)
    assert found, out
    return Path(found.group(1))


def test_run_dry_run_changes_nothing_and_never_reloads(tmp_path, installed):
    before = _everything(tmp_path)
    done = _cli(tmp_path, "run", "cacert", "--dry-run", "-d", NAME, "-d", "b.example.test",
                "--set", f"reload_test=touch {installed / 'reload_test'}",
                "--set", f"reload=touch {installed / 'reload'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: " in done.stdout and "against a throwaway CA" in done.stdout
    assert "passed every state (the throwaway CA issued serial" in done.stdout, done.stdout
    assert (installed / "reload_test").exists()
    assert not (installed / "reload").exists()
    assert _everything(tmp_path) == before
    assert not _scratch(done.stdout).exists()  # removed after a dry run that passed


def test_renew_dry_run_changes_nothing_and_never_reloads(tmp_path, installed):
    before = _everything(tmp_path)
    done = _cli(tmp_path, "renew", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"dry run: renewing {NAME}: not due until " in done.stdout, done.stdout
    assert f"dry run: {NAME}: passed every state" in done.stdout
    assert (installed / "reload_test").exists()
    assert not (installed / "reload").exists()
    assert _everything(tmp_path) == before
    assert not _scratch(done.stdout).exists()


def test_a_dry_run_that_fails_keeps_its_scratch_and_says_where(tmp_path, installed):
    before = _everything(tmp_path)
    done = _cli(tmp_path, "renew", "--dry-run", NAME, "--set", "reload_test=false")
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert f"dry run: {NAME}: FAILED in state " in done.stdout
    scratch = _scratch(done.stdout)
    try:
        assert f"certwright --state-dir {scratch / 'state'} history " in done.stdout
        assert (scratch / "state" / "certwright.sqlite").exists()
    finally:
        import shutil
        shutil.rmtree(scratch)
    assert _everything(tmp_path) == before


def test_acme_dry_runs_use_the_staging_directory_or_refuse(tmp_path):
    spec = load_pipeline(resolve_pipeline_path("acme"))
    given = {"domains": ["a.example.org"], "reload": "systemctl reload nginx",
             "reload_test": "nginx -t", "check": "127.0.0.1:443"}
    out = trial_inputs(spec, given, tmp_path)
    assert out["directory"] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert (out["reload"], out["reload_test"], out["check"]) == ("", "nginx -t", "")
    assert out["cert_dir"].startswith(str(tmp_path))
    other = {**given, "directory": "https://acme.example.net/directory"}
    with pytest.raises(InputError, match=r"no staging directory is known for the ACME "
                                         r"directory 'https://acme.example.net/directory'; "
                                         r"give .* with --set directory=URL"):
        trial_inputs(spec, other, tmp_path)
    assert trial_inputs(spec, other, tmp_path, explicit={"directory"})["directory"] == \
        "https://acme.example.net/directory"


def test_renew_set_without_dry_run_is_refused(tmp_path):
    done = _cli(tmp_path, "renew", "--set", "directory=https://x.test/dir")
    assert done.returncode == 2
    assert "renew --set is for --dry-run only" in done.stderr
