"""Faults at the store's I/O under the real CLI (the fault campaign, part b).

A disk that fills up (a small tmpfs, between two commands and in the middle of one), a
read-only remount, I/O errors (a connection that fails every statement while a flag file
exists: the standard sqlite3 module has no VFS to fail at) and a damaged database: each
gives its own message and exit code 5 (never 1, "the run failed", never a traceback),
loses nothing (the journal is as it was before the failed command), and the run resumes
once the fault is gone. A run whose process died shows as interrupted, not running.

The mounts need root; CI runs as root, so there a missing root fails instead of skipping.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

EXIT_OK, EXIT_PARKED, EXIT_STORE = 0, 3, 5

# Parks at a wait for a file; `work` runs once per key (its marker file says how often it
# ran), and in the "during" scenarios it causes the fault itself, once: fills the disk or
# raises the I/O-error flag, so that the commit of its own result is what fails.
PIPELINE = """
pipeline: faults
version: 1
inputs:
  fill: {type: string, default: ""}
  flag: {type: string, default: ""}
initial: working
states:
  working:
    run:
      - step: shell
        id: work
        with:
          argv:
            - sh
            - -c
            - >-
              echo "$CERTWRIGHT_IDEMPOTENCY_KEY" >> "$0/ran";
              if [ -n "$1" ] && [ ! -e "$0/filled" ]; then
              : > "$0/filled"; dd if=/dev/zero of="$1" bs=64k 2>/dev/null; fi;
              if [ -n "$2" ] && [ ! -e "$0/flagged" ]; then : > "$0/flagged"; : > "$2"; fi;
              true
            - "${run.dir}"
            - "${fill}"
            - "${flag}"
      - step: wait.file
        id: approval
        with: {path: "${run.dir}/approved"}
    next: done
  done: {final: true}
"""


Result = subprocess.CompletedProcess[str]


def cli(state: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    full = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), **(env or {})}
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=full,
                          capture_output=True, text=True, timeout=120, check=False)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def _history(state: Path, rid: str) -> list[dict[str, Any]]:
    result = cli(state, "history", rid, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    return list(json.loads(result.stdout))


def _status(state: Path, rid: str) -> dict[str, Any]:
    result = cli(state, "status", rid, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    return dict(json.loads(result.stdout)["runs"][0])


Figures = dict[str, int]
Journal = list[dict[str, Any]]


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The campaign's counts over this file's tests, printed at the end (past pytest's
    capture); each test asserts its own zeros."""
    counts: Figures = {"runs": 0, "faults": 0, "lost": 0, "duplicated": 0}
    yield counts
    line = (f"store faults: {counts['runs']} runs, {counts['faults']} faults injected, "
            f"{counts['lost']} runs lost, {counts['duplicated']} step results duplicated")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}")


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; these tests mount a tmpfs")
        pytest.skip("needs root to mount a small tmpfs")


@contextmanager
def tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A small tmpfs at ``where``, unmounted (lazily, if still busy) whatever happens."""
    _need_root()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(where)], check=False,
                       capture_output=True)
        if subprocess.run(["umount", str(where)], check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True,
                   check=False)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def _finish(figures: Figures, state: Path, rid: str, before: Journal) -> None:
    """Once the fault is gone: resume succeeds, the journal goes on from where it was,
    and the step's result was recorded once."""
    (state / "runs" / rid / "approved").touch()
    resumed = cli(state, "resume", rid)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    after = _history(state, rid)
    if after[:len(before)] != before:
        figures["lost"] += 1
    assert after[:len(before)] == before
    done = [e for e in after if e["kind"] == "step_done" and e["data"]["step"] == "work"]
    figures["duplicated"] += max(0, len(done) - 1)
    assert len(done) == 1
    assert _status(state, rid)["status"] == "succeeded"


def _parked(figures: Figures, tmp_path: Path, state: Path, rid: str) -> Journal:
    pipeline = tmp_path / "faults.yaml"
    pipeline.write_text(PIPELINE)
    parked = cli(state, "run", str(pipeline), "--run-id", rid, "--no-wait")
    figures["runs"] += 1
    assert parked.returncode == EXIT_PARKED, parked.stderr
    (state / "runs" / rid / "approved").touch()
    return _history(state, rid)


def _refused(figures: Figures, result: Result, *words: str) -> None:
    figures["faults"] += 1
    _no_traceback(result)
    assert result.returncode == EXIT_STORE, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_disk_full_between_commands(tmp_path: Path, figures: Figures) -> None:
    """A full disk: resume says so and what to do, status and history still read the
    store, and once space is freed the run goes on."""
    with tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        before = _parked(figures, tmp_path, state, "full")
        filler = _fill(disk)
        _refused(figures, cli(state, "resume", "full"), "full", "free space", str(state))
        assert _history(state, "full") == before
        assert _status(state, "full")["status"] == "waiting"
        filler.unlink()
        _finish(figures, state, "full", before)


def test_disk_full_in_the_middle_of_a_run(tmp_path: Path, figures: Figures) -> None:
    """The step fills the disk, so committing its result fails: exit 5, and the run shows
    as interrupted (not running for ever); freed, resume re-runs the step (same key)."""
    with tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        pipeline = tmp_path / "faults.yaml"
        pipeline.write_text(PIPELINE)
        filler = disk / "filler"
        failed = cli(state, "run", str(pipeline), "--run-id", "mid", "--set",
                     f"fill={filler}")
        figures["runs"] += 1
        _refused(figures, failed, "full", "free space")
        before = _history(state, "mid")  # the step's result may or may not have fitted
        run = _status(state, "mid")
        assert run["status"] == "running" and run["interrupted"] is True
        table = cli(state, "status")
        assert "interrupted" in table.stdout and "certwright resume mid" in table.stdout
        filler.unlink()
        _finish(figures, state, "mid", before)
        ran = (state / "runs" / "mid" / "ran").read_text().split()
        assert set(ran) == {"mid:1:0"} and len(ran) <= 2  # any re-run had the same key


def test_read_only_store(tmp_path: Path, figures: Figures) -> None:
    """A read-only remount: status and history still work (opening writes nothing, not
    even a chmod), resume says the store is read-only; remounted rw, the run goes on."""
    with tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        before = _parked(figures, tmp_path, state, "ro")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        _refused(figures, cli(state, "resume", "ro"), "read-only", str(state))
        assert _history(state, "ro") == before
        assert _status(state, "ro")["status"] == "waiting"
        listing = cli(state, "status")
        assert listing.returncode == EXIT_OK and "ro" in listing.stdout, listing.stderr
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        _finish(figures, state, "ro", before)


def test_io_errors_between_commands_and_during_a_run(tmp_path: Path, figures: Figures) -> None:
    """Every statement failing with SQLite's "disk I/O error": the command says so (exit
    5) and, the fault gone, the run resumes with nothing lost."""
    state = tmp_path / "state"
    flag = tmp_path / "eio"
    env = {"CERTWRIGHT_IO_ERROR_WHILE": str(flag)}
    before = _parked(figures, tmp_path, state, "eio")
    flag.touch()
    _refused(figures, cli(state, "resume", "eio", env=env), "I/O error", str(state))
    _refused(figures, cli(state, "status", env=env), "I/O error")
    flag.unlink()
    assert _history(state, "eio") == before
    _finish(figures, state, "eio", before)

    pipeline = tmp_path / "faults.yaml"
    failed = cli(state, "run", str(pipeline), "--run-id", "eio-mid", "--set", f"flag={flag}",
                 env=env)
    figures["runs"] += 1
    _refused(figures, failed, "I/O error")
    flag.unlink()
    before = _history(state, "eio-mid")
    assert _status(state, "eio-mid")["interrupted"] is True
    _finish(figures, state, "eio-mid", before)


def _wal_bytes(state: Path) -> int:
    wal = state / "certwright.sqlite-wal"
    return wal.stat().st_size if wal.exists() else 0


def test_commands_that_drive_a_run_close_the_store(tmp_path: Path, figures: Figures) -> None:
    """`run --no-wait` (parking) and `resume` (finishing) close the store before they
    exit: its write-ahead log is checkpointed into the database file, so what each wrote
    is in certwright.sqlite itself (a backup that copies only that file has it all),
    whatever the interpreter does with objects left over at its exit. (A reading command
    such as `history` may leave an empty log file behind; it holds nothing.)"""
    state = tmp_path / "state"
    pipeline = tmp_path / "faults.yaml"
    pipeline.write_text(PIPELINE)
    parked = cli(state, "run", str(pipeline), "--run-id", "closed", "--no-wait")
    figures["runs"] += 1
    assert parked.returncode == EXIT_PARKED, parked.stderr
    assert _wal_bytes(state) == 0
    (state / "runs" / "closed" / "approved").touch()
    resumed = cli(state, "resume", "closed")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert _wal_bytes(state) == 0


def test_a_damaged_database_is_refused_and_not_written_into(tmp_path: Path,
                                                           figures: Figures) -> None:
    """Garbage over a page of the database: status says it is damaged (exit 5, no
    traceback), and run refuses to open it for writing, leaving the file as it was."""
    state = tmp_path / "state"
    _parked(figures, tmp_path, state, "one")
    db = state / "certwright.sqlite"
    size = db.stat().st_size
    with open(db, "r+b") as fh:  # every page but the first (the header) overwritten
        fh.seek(4096)
        fh.write(os.urandom(size - 4096))
    damaged = db.read_bytes()
    _refused(figures, cli(state, "status"), "damaged", str(db))
    pipeline = tmp_path / "faults.yaml"
    _refused(figures, cli(state, "run", str(pipeline), "--run-id", "two", "--no-wait"), "damaged")
    assert db.read_bytes() == damaged


def test_a_killed_run_shows_as_interrupted_with_how_to_resume(tmp_path: Path,
                                                             figures: Figures) -> None:
    """SIGKILL after the first commit: the stored status is still "running", but no
    process drives it, so status says interrupted and how to go on."""
    state = tmp_path / "state"
    pipeline = tmp_path / "faults.yaml"
    pipeline.write_text(PIPELINE)
    killed = cli(state, "run", str(pipeline), "--run-id", "k", "--no-wait",
                 env={"CERTWRIGHT_CRASH_AFTER_COMMITS": "1"})
    figures["runs"] += 1
    figures["faults"] += 1  # a SIGKILL
    assert killed.returncode < 0, killed.stderr
    run = _status(state, "k")
    assert (run["status"], run["interrupted"]) == ("running", True)
    table = cli(state, "status")
    line = next(ln for ln in table.stdout.splitlines() if ln.startswith("k "))
    assert "interrupted" in line and "resume with: certwright resume k" in line
    resumed = cli(state, "resume", "k", "--no-wait")
    assert resumed.returncode == EXIT_PARKED, resumed.stderr
    assert _status(state, "k")["interrupted"] is False
