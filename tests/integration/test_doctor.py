"""`certwright doctor` on real parts: a fresh state dir with the built-in CA up on loopback
(all ok, exit 0) and then down (the CA fails, exit 1), a read-only state dir (a tmpfs
remounted read-only), a damaged database file, a daemon holding the store's lock, runs
waiting with no daemon, a missing Maildir and a failing config test. Each problem comes
with its fix; nothing is changed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certwright.ca.server import CAServer
from certwright.mail.maildir import Maildir
from certwright.state.location import open_store
from certwright.state.locks import daemon_lock
from tests.support.ca import (  # noqa: F401  (fixtures)
    ca_server,
    fake_clock,
    smtp_sink,
)

_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]
HELLO = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "hello.yaml"


def doctor(tmp: Path, state: Path, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Run `doctor --json`; the exit code and the checks by name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTWRIGHT_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp / "no-config")
    env["CERTWRIGHT_CACHE_DIR"] = str(tmp / "cache")
    done = subprocess.run([*CERTWRIGHT, "--state-dir", str(state), "doctor", "--json", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] == (done.returncode == 0)
    return done.returncode, {c["check"]: c for c in doc["checks"]}


def _config(tmp: Path, **inputs: str) -> Path:
    lines = ["pipelines:", "  cacert:"] + [f"    {k}: {json.dumps(v)}" for k, v in inputs.items()]
    path = tmp / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_all_ok_with_the_ca_up_then_a_failure_when_it_is_down(
        tmp_path: Path, ca_server: CAServer) -> None:
    """A fresh state dir, a real Maildir, a passing config test and the CA answering on
    loopback: every check ok, exit 0. With the CA stopped: its check fails naming the URL
    and the fix, exit 1; the others stay ok."""
    maildir = Maildir(tmp_path / "mail")
    maildir.ensure()
    config = _config(tmp_path, ca=ca_server.url, maildir=str(maildir.path),
                     reload_test="true", reload="true")
    state = tmp_path / "state"
    code, checks = doctor(tmp_path, state, "--config", str(config))
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert {"state dir", "store", "daemon", "store key", "configuration", "CA (cacert: ca)",
            "mail (cacert: maildir)", "web server (cacert)"} <= set(checks)
    assert checks["store key"]["detail"].startswith("none: ")
    assert ca_server.url in checks["CA (cacert: ca)"]["detail"]
    assert not state.exists()  # the checks changed nothing
    ca_server.stop()
    code, checks = doctor(tmp_path, state, "--config", str(config))
    assert code == 1
    ca = checks["CA (cacert: ca)"]
    assert ca["status"] == "fail"
    assert f"cannot reach {ca_server.url}" in ca["detail"]
    assert "start the CA" in ca["fix"]
    assert checks["mail (cacert: maildir)"]["status"] == "ok"


def test_the_store_key_is_checked(tmp_path: Path) -> None:
    """A key file open to others fails naming the file and the fix; a good one is named
    by its id, never shown."""
    from certwright.state.sealing import generate_key_file
    key = tmp_path / "store.key"
    sealer = generate_key_file(key)
    state = tmp_path / "state"
    _, checks = doctor(tmp_path, state, "--store-key", str(key))
    assert checks["store key"]["status"] == "ok"
    assert sealer.key_id in checks["store key"]["detail"]
    assert key.read_text().strip() not in json.dumps(checks)
    key.chmod(0o644)
    code, checks = doctor(tmp_path, state, "--store-key", str(key))
    assert code == 1 and checks["store key"]["status"] == "fail"
    assert "chmod 600" in checks["store key"]["detail"] + checks["store key"]["fix"]


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; this test mounts a tmpfs")
        pytest.skip("needs root to mount a small tmpfs")


@contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    """A small tmpfs at ``where``, unmounted (lazily, if still busy) whatever happens."""
    _need_root()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(where)], check=False,
                       capture_output=True)
        if subprocess.run(["umount", str(where)], check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_state_dir_fails_with_the_remount_fix(tmp_path: Path) -> None:
    """A state dir on a file system mounted read-only: the state dir check fails saying
    so and how to fix it; the store in it still reads and passes its check."""
    with tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        open_store(state).close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code, checks = doctor(tmp_path, state, "--set", "reload_test=")
    assert code == 1
    assert checks["state dir"]["status"] == "fail"
    assert "Read-only file system" in checks["state dir"]["detail"]
    assert "remount it read-write" in checks["state dir"]["fix"]
    assert checks["store"]["status"] == "ok", checks["store"]


def test_a_damaged_database_fails_the_store_check(tmp_path: Path) -> None:
    """A store file whose pages were overwritten: the store check fails (damaged), with
    the fix of moving it aside and restoring a backup; the file is left as it was."""
    state = tmp_path / "state"
    store = open_store(state)
    store.close()
    db = state / "certwright.sqlite"
    data = bytearray(db.read_bytes())
    data[4096:8192] = b"\xa5" * 4096  # the second page (a table's b-tree): garbage
    db.write_bytes(bytes(data))
    code, checks = doctor(tmp_path, state)
    assert code == 1
    assert checks["store"]["status"] == "fail"
    assert "damaged" in checks["store"]["detail"]
    assert "restore it from a backup" in checks["store"]["fix"]
    assert db.read_bytes() == bytes(data)


def test_a_garbage_database_file_fails_the_store_check(tmp_path: Path) -> None:
    """A file that is no database at all (its header overwritten) fails the same way."""
    state = tmp_path / "state"
    open_store(state).close()
    db = state / "certwright.sqlite"
    db.write_bytes(b"not a database, just a file that took its name" * 100)
    code, checks = doctor(tmp_path, state)
    assert code == 1
    assert checks["store"]["status"] == "fail"
    assert "restore it from a backup" in checks["store"]["fix"]


def test_a_daemon_holding_the_store_is_named(tmp_path: Path) -> None:
    """While a daemon holds the store's lock, the daemon check is ok and names its pid."""
    state = tmp_path / "state"
    open_store(state).close()
    with daemon_lock(state):
        code, checks = doctor(tmp_path, state)
    assert code == 0, checks
    assert checks["daemon"]["status"] == "ok"
    assert f"pid {os.getpid()}" in checks["daemon"]["detail"]


def test_waiting_runs_without_a_daemon_are_a_warning(tmp_path: Path) -> None:
    """A run parked at a wait and no daemon: a warning (exit 0) saying how to go on."""
    state = tmp_path / "state"
    parked = subprocess.run([*CERTWRIGHT, "--state-dir", str(state), "run", str(HELLO),
                             "--no-wait"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert parked.returncode == 3, parked.stderr
    code, checks = doctor(tmp_path, state)
    assert code == 0, checks
    assert checks["daemon"]["status"] == "warn"
    assert "1 run(s) wait" in checks["daemon"]["detail"]
    assert "certwright daemon" in checks["daemon"]["fix"]


def test_a_missing_maildir_and_a_failing_config_test_fail(tmp_path: Path) -> None:
    """A maildir input naming no Maildir, and a config test that fails: both fail, each
    with its fix (the mkdir to run; the server's configuration to correct)."""
    state = tmp_path / "state"
    code, checks = doctor(tmp_path, state, "cacert", "--set", f"maildir={tmp_path}/nowhere",
                          "--set", "reload_test=sh -c 'echo syntax error >&2; exit 3'")
    assert code == 1
    mail = checks["mail (cacert: maildir)"]
    assert mail["status"] == "fail"
    assert f"mkdir -p {tmp_path}/nowhere/cur" in mail["fix"]
    web = checks["web server (cacert)"]
    assert web["status"] == "fail"
    assert "status 3: syntax error" in web["detail"]


def test_an_outside_ca_with_the_built_in_mail_server_fails(tmp_path: Path) -> None:
    """`ca` a URL but `maildir` left to the built-in mail server (which runs only with the
    built-in CA): the mail check fails, saying to point maildir at a real Maildir."""
    code, checks = doctor(tmp_path, tmp_path / "state", "cacert", "--set",
                          "ca=http://127.0.0.1:9", "--timeout", "1")
    assert code == 1
    mail = checks["mail (cacert)"]
    assert mail["status"] == "fail"
    assert "only with the built-in CA" in mail["detail"]
    assert "maildir" in mail["fix"]
