"""install.files, install.reload and install.check on real files and processes (no server)."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from certwright import atomic as atomic_mod
from certwright.clock import FakeClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError, StepError
from certwright.steps import _install_files as files_mod
from certwright.steps.install import InstallCheck, InstallFiles, InstallReload
from tests.support.apache import make_self_signed, pem_fingerprint


class RecordingLog:
    """A structlog-like logger that records (level, event, fields)."""

    def __init__(self, records: list[tuple[str, str, dict[str, Any]]] | None = None,
                 **bound: Any) -> None:
        self.records = [] if records is None else records
        self.bound = bound

    def bind(self, **kw: Any) -> RecordingLog:
        return RecordingLog(self.records, **{**self.bound, **kw})

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, {**self.bound, **kw}))

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


def make_ctx(tmp_path: Path, params: dict[str, Any], *, log: RecordingLog | None = None,
             clock: FakeClock | None = None) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=tmp_path / "run", state_dir=tmp_path,
                       clock=clock or FakeClock(), log=log or RecordingLog())


def outputs(result: Any) -> dict[str, Any]:
    if not isinstance(result, Done):
        raise AssertionError(f"expected Done, got {result!r}")
    return dict(result.outputs)


def make_material(folder: Path, tag: str, *, chain: bool = True) -> dict[str, str]:
    """Write a key/cert (and a chain) for example.test; return install.files params."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = make_self_signed()
    (folder / f"{tag}.crt").write_bytes(cert)
    (folder / f"{tag}.key").write_bytes(key)
    os.chmod(folder / f"{tag}.key", 0o600)
    params = {"cert": str(folder / f"{tag}.crt"), "key": str(folder / f"{tag}.key")}
    if chain:
        ca_cert, _ = make_self_signed("ca.example.test")
        (folder / f"{tag}-chain.pem").write_bytes(ca_cert)
        params["chain"] = str(folder / f"{tag}-chain.pem")
    return params


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``folder`` with its mode and (for files) content."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(folder.rglob("*")):
        st = os.lstat(path)
        out[str(path.relative_to(folder))] = (
            st.st_mode, path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


@pytest.fixture
def target(tmp_path: Path) -> Path:
    folder = tmp_path / "www" / "certs"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    return folder


def install(tmp_path: Path, target: Path, material: dict[str, str], **extra: Any) -> dict[str, Any]:
    params = {**material, "dir": str(target), **extra}
    return outputs(InstallFiles().run(make_ctx(tmp_path, params)))


# -- install.files -------------------------------------------------------------------------

def test_writes_files_with_modes_and_contents(tmp_path: Path, target: Path) -> None:
    """Key 0600, cert/chain/fullchain 0644; fullchain is leaf then chain; changed=true."""
    m = make_material(tmp_path / "in", "a")
    out = install(tmp_path, target, m)
    assert out["changed"] is True and out["previous"] == ""
    modes = {n: stat.S_IMODE(os.lstat(target / n).st_mode)
             for n in ("server.key", "server.crt", "chain.pem", "fullchain.pem")}
    assert modes == {"server.key": 0o600, "server.crt": 0o644, "chain.pem": 0o644,
                     "fullchain.pem": 0o644}
    assert (target / "server.key").read_bytes() == Path(m["key"]).read_bytes()
    assert pem_fingerprint((target / "server.crt").read_bytes()) == pem_fingerprint(
        Path(m["cert"]).read_bytes())
    full = (target / "fullchain.pem").read_bytes()
    assert full == (target / "server.crt").read_bytes() + (target / "chain.pem").read_bytes()
    assert out["cert_path"] == str(target / "server.crt")
    assert not (target / ".certwright" / "pending").exists()
    assert not [p for p in target.iterdir() if p.name.endswith("-tmp")]


def test_custom_names_and_no_chain(tmp_path: Path, target: Path) -> None:
    """Custom file names are used; without a chain, chain_path is "" and no chain file."""
    m = make_material(tmp_path / "in", "a", chain=False)
    out = install(tmp_path, target, m, cert_name="site.pem", key_name="site.key")
    assert out["chain_path"] == ""
    assert (target / "site.pem").exists() and (target / "site.key").exists()
    assert not (target / "chain.pem").exists()
    assert (target / "fullchain.pem").read_bytes() == (target / "site.pem").read_bytes()


def test_key_mismatch_refused_before_writing(tmp_path: Path, target: Path) -> None:
    """A key that does not match the certificate is refused and the folder is unchanged."""
    install(tmp_path, target, make_material(tmp_path / "in", "a"))
    before = snapshot(target)
    good = make_material(tmp_path / "in", "b")
    other = make_material(tmp_path / "in", "c")
    with pytest.raises(PermanentError, match="does not match the public key") as err:
        install(tmp_path, target, {**good, "key": other["key"]})
    assert "nothing was written" in str(err.value)
    assert snapshot(target) == before


def test_key_mismatch_does_not_create_missing_folder(tmp_path: Path) -> None:
    """With a mismatched key even a missing target folder is not created."""
    good = make_material(tmp_path / "in", "b")
    other = make_material(tmp_path / "in", "c")
    missing = tmp_path / "new-certs"
    with pytest.raises(PermanentError):
        install(tmp_path, missing, {**good, "key": other["key"]})
    assert not missing.exists()


def test_missing_folder_created_0755(tmp_path: Path) -> None:
    """A missing folder whose parent is safe is created with mode 0755."""
    os.chmod(tmp_path, 0o755)
    folder = tmp_path / "fresh"
    install(tmp_path, folder, make_material(tmp_path / "in", "a"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert (folder / "server.crt").exists()


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_group_or_world_writable_folder_refused(tmp_path: Path, target: Path, mode: int) -> None:
    """A target folder writable by group or others is refused; nothing is written."""
    os.chmod(target, mode)
    with pytest.raises(PermanentError, match="writable by group or others"):
        install(tmp_path, target, make_material(tmp_path / "in", "a"))
    assert list(target.iterdir()) == []


def test_symlinked_folder_refused(tmp_path: Path, target: Path) -> None:
    """A target folder that is a symlink is refused; the real folder gets nothing."""
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PermanentError, match="is a symlink"):
        install(tmp_path, link, make_material(tmp_path / "in", "a"))
    assert list(target.iterdir()) == []


def _nobody() -> tuple[int, int]:
    import pwd
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    if entry.pw_uid == os.geteuid():
        pytest.skip("the tests run as 'nobody'")
    return entry.pw_uid, entry.pw_gid


def _as_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: chown is needed to give a folder to another user")
        pytest.skip("needs root, to give a folder to another user")


def test_folder_owned_by_another_user_refused(tmp_path: Path, target: Path) -> None:
    """A 0755 cert_dir owned by ``nobody`` (who could swap the files later) is refused
    before anything is written, naming the folder, its owner and what to do."""
    _as_root()
    uid, gid = _nobody()
    os.chown(target, uid, gid)
    with pytest.raises(PermanentError) as info:
        install(tmp_path, target, make_material(tmp_path / "in", "a"))
    message = str(info.value)
    assert str(target) in message and "nobody" in message and "chown" in message
    assert list(target.iterdir()) == []


def test_folder_under_a_parent_owned_by_another_user_refused(tmp_path: Path) -> None:
    """A parent that another user owns could rename cert_dir away and put its own there."""
    _as_root()
    uid, gid = _nobody()
    parent = tmp_path / "shared"
    folder = parent / "certs"
    folder.mkdir(parents=True)
    os.chmod(parent, 0o755)
    os.chown(parent, uid, gid)
    with pytest.raises(PermanentError, match=r"shared is owned by nobody"):
        install(tmp_path, folder, make_material(tmp_path / "in", "a"))
    assert list(folder.iterdir()) == []


def test_folder_reached_through_a_symlinked_parent_refused(tmp_path: Path,
                                                           target: Path) -> None:
    """``<link>/certs`` where ``<link>`` is a symlink to the real parent: refused, and the
    real folder gets nothing (the link could be pointed elsewhere between two writes)."""
    link = tmp_path / "linked-www"
    link.symlink_to(target.parent)
    with pytest.raises(PermanentError) as info:
        install(tmp_path, link / target.name, make_material(tmp_path / "in", "a"))
    message = str(info.value)
    assert f"{link} is a symlink" in message and str(target.parent) in message
    assert list(target.iterdir()) == []


def test_folder_under_a_sticky_world_writable_parent_is_accepted(tmp_path: Path) -> None:
    """As in /tmp: others may write there but cannot rename what is ours."""
    parent = tmp_path / "sticky"
    parent.mkdir()
    os.chmod(parent, 0o1777)
    folder = parent / "certs"
    folder.mkdir(mode=0o755)
    install(tmp_path, folder, make_material(tmp_path / "in", "a"))
    assert (folder / "server.crt").exists()


def test_symlinked_target_file_refused(tmp_path: Path, target: Path) -> None:
    """A symlink at a target file name is refused; its destination is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (target / "server.crt").symlink_to(victim)
    with pytest.raises(PermanentError, match=r"server\.crt is a symlink"):
        install(tmp_path, target, make_material(tmp_path / "in", "a"))
    assert victim.read_bytes() == b"precious"
    assert not (target / "server.key").exists()


def test_idempotent_rewrite_reports_unchanged(tmp_path: Path, target: Path) -> None:
    """Installing the same material twice changes nothing and keeps no extra version."""
    m = make_material(tmp_path / "in", "a")
    install(tmp_path, target, m)
    before = snapshot(target)
    out = install(tmp_path, target, m)
    assert out["changed"] is False and out["previous"] == ""
    assert snapshot(target) == before


def test_previous_versions_kept_and_pruned(tmp_path: Path, target: Path) -> None:
    """Each replacement keeps the old files in a version folder, pruned to ``keep``."""
    clock = FakeClock()
    fps = []
    outs = []
    for tag in "abcd":
        m = make_material(tmp_path / "in", tag)
        fps.append(pem_fingerprint(Path(m["cert"]).read_bytes()))
        outs.append(outputs(InstallFiles().run(make_ctx(
            tmp_path, {**m, "dir": str(target), "keep": 2}, clock=clock))))
        clock.advance(60)
    versions = sorted((target / ".certwright" / "versions").iterdir())
    assert len(versions) == 2
    # the newest version holds c's files (replaced by d), the one before b's
    assert outs[-1]["previous"] == str(versions[-1])
    assert pem_fingerprint((versions[-1] / "server.crt").read_bytes()) == fps[2]
    assert pem_fingerprint((versions[0] / "server.crt").read_bytes()) == fps[1]
    assert stat.S_IMODE((versions[-1] / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / ".certwright").stat().st_mode) == 0o700
    assert pem_fingerprint((target / "server.crt").read_bytes()) == fps[3]


def test_dropping_the_chain_removes_the_old_chain_file(tmp_path: Path, target: Path) -> None:
    """A new install without chain removes chain.pem; the old one is in the version."""
    install(tmp_path, target, make_material(tmp_path / "in", "a"))
    out = install(tmp_path, target, make_material(tmp_path / "in", "b", chain=False))
    assert not (target / "chain.pem").exists()
    assert (Path(out["previous"]) / "chain.pem").exists()


class Crash(BaseException):
    """Stands for the process dying (not an Exception, so nothing catches it)."""


def crash_when_writing(monkeypatch: pytest.MonkeyPatch, target_path: Path) -> None:
    real = files_mod.write_atomic

    def fake(path: Path, data: bytes, mode: int, **kw: Any) -> None:
        if path == target_path:
            raise Crash(str(path))
        real(path, data, mode, **kw)

    monkeypatch.setattr(files_mod, "write_atomic", fake)
    real_publish = atomic_mod._publish

    def fake_publish(tmp: str, target: Path, dir_fd: int) -> None:
        if target == target_path:
            raise Crash(str(target))
        real_publish(tmp, target, dir_fd)

    monkeypatch.setattr(atomic_mod, "_publish", fake_publish)


def test_crash_mid_switch_is_finished_by_next_call(tmp_path: Path, target: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the key was switched leaves a marker; the next call finishes it."""
    install(tmp_path, target, make_material(tmp_path / "in", "a"))
    b = make_material(tmp_path / "in", "b")
    with monkeypatch.context() as mp:
        crash_when_writing(mp, target / "server.crt")
        with pytest.raises(Crash):
            install(tmp_path, target, b)
    assert (target / ".certwright" / "pending").exists()
    assert (target / "server.key").read_bytes() == Path(b["key"]).read_bytes()  # half done
    log = RecordingLog()
    out = outputs(InstallFiles().run(make_ctx(tmp_path, {**b, "dir": str(target)}, log=log)))
    assert "install_pending_finished" in log.events()
    assert out["changed"] is False  # finishing the leftover already installed b
    assert not (target / ".certwright" / "pending").exists()
    assert pem_fingerprint((target / "server.crt").read_bytes()) == pem_fingerprint(
        Path(b["cert"]).read_bytes())


def test_crash_mid_first_install_is_undone_then_installed_again(
        tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first install stages nothing: a crash after the key was written leaves a marker;
    the next call removes the half deploy (nothing was there before) and installs."""
    a = make_material(tmp_path / "in", "a")
    with monkeypatch.context() as mp:
        crash_when_writing(mp, target / "server.crt")
        with pytest.raises(Crash):
            install(tmp_path, target, a)
    assert (target / ".certwright" / "pending").exists()
    assert not (target / ".certwright" / "staging").exists()
    assert (target / "server.key").exists() and not (target / "server.crt").exists()
    log = RecordingLog()
    out = outputs(InstallFiles().run(make_ctx(tmp_path, {**a, "dir": str(target)}, log=log)))
    assert "install_pending_rolled_back" in log.events()
    assert out["changed"] is True and not (target / ".certwright" / "pending").exists()
    assert (target / "server.key").read_bytes() == Path(a["key"]).read_bytes()
    assert pem_fingerprint((target / "server.crt").read_bytes()) == pem_fingerprint(
        Path(a["cert"]).read_bytes())


def test_crash_with_damaged_staging_is_rolled_back(tmp_path: Path, target: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A leftover marker whose staged files are damaged is rolled back to the saved version,
    then the requested install proceeds."""
    a = make_material(tmp_path / "in", "a")
    install(tmp_path, target, a)
    b = make_material(tmp_path / "in", "b")
    with monkeypatch.context() as mp:
        crash_when_writing(mp, target / "server.crt")
        with pytest.raises(Crash):
            install(tmp_path, target, b)
    (target / ".certwright" / "staging" / "cert").write_bytes(b"damaged")
    log = RecordingLog()
    c = make_material(tmp_path / "in", "c")
    out = outputs(InstallFiles().run(make_ctx(tmp_path, {**c, "dir": str(target)}, log=log)))
    assert "install_pending_rolled_back" in log.events()
    assert out["changed"] is True
    # the version saved for this install holds a (restored by the rollback), not half b
    prev = Path(out["previous"])
    assert (prev / "server.key").read_bytes() == Path(a["key"]).read_bytes()
    assert pem_fingerprint((target / "server.crt").read_bytes()) == pem_fingerprint(
        Path(c["cert"]).read_bytes())


def test_unreadable_inputs_refused(tmp_path: Path, target: Path) -> None:
    """A certificate path holding no PEM certificate is a PermanentError naming it."""
    m = make_material(tmp_path / "in", "a")
    bad = tmp_path / "in" / "bad.crt"
    bad.write_bytes(b"not a cert")
    with pytest.raises(PermanentError, match=r"bad\.crt holds no PEM certificate"):
        install(tmp_path, target, {**m, "cert": str(bad)})
    assert list(target.iterdir()) == []


# -- install.reload ------------------------------------------------------------------------

def reload_ctx(tmp_path: Path, **params: Any) -> StepContext:
    return make_ctx(tmp_path, params)


def test_reload_runs_test_then_command(tmp_path: Path) -> None:
    """The config test and the reload command both run; outputs carry their output."""
    flag = tmp_path / "reloaded"
    out = outputs(InstallReload().run(reload_ctx(
        tmp_path, test=[sys.executable, "-c", "print('Syntax OK')"],
        command=[sys.executable, "-c", f"open({str(flag)!r}, 'w').write('x'); print('done')"])))
    assert flag.exists()
    assert out["test_stdout"].strip() == "Syntax OK" and out["stdout"].strip() == "done"
    assert out["skipped"] is False and out["returncode"] == 0


def test_failing_config_test_prevents_reload(tmp_path: Path) -> None:
    """A failing config test is a PermanentError with its stderr; the reload never runs."""
    flag = tmp_path / "reloaded"
    with pytest.raises(PermanentError, match="broken directive") as err:
        InstallReload().run(reload_ctx(
            tmp_path,
            test=[sys.executable, "-c", "import sys; sys.exit('broken directive on line 3')"],
            command=["touch", str(flag)]))
    assert "was not reloaded" in str(err.value)
    assert not flag.exists()


def test_reload_failure_is_retryable(tmp_path: Path) -> None:
    """A failing reload command is a retryable StepError."""
    with pytest.raises(StepError) as err:
        InstallReload().run(reload_ctx(tmp_path, command="false"))
    assert err.value.retryable is True


def test_empty_command_is_skipped_and_string_is_split(tmp_path: Path) -> None:
    """An empty command gives skipped; a string command is split without a shell."""
    assert outputs(InstallReload().run(reload_ctx(tmp_path, command="")))["skipped"] is True
    out = outputs(InstallReload().run(reload_ctx(tmp_path, command="echo '$HOME' a")))
    assert out["stdout"] == "$HOME a\n"


def test_shell_only_when_asked(tmp_path: Path) -> None:
    """With shell: true the string runs in /bin/sh."""
    out = outputs(InstallReload().run(reload_ctx(tmp_path, command="echo a && echo b",
                                                 shell=True)))
    assert out["stdout"] == "a\nb\n"


def test_reload_timeout_and_missing_program(tmp_path: Path) -> None:
    """A reload that overruns is killed (StepError); a missing program is permanent."""
    with pytest.raises(StepError, match=r"did not finish within 0\.2 s"):
        InstallReload().run(reload_ctx(tmp_path, command=["sleep", "5"], timeout=0.2))
    with pytest.raises(PermanentError, match="cannot run"):
        InstallReload().run(reload_ctx(tmp_path, command=["/nonexistent/reload-me"]))


# -- install.check without a server ---------------------------------------------------------

def test_check_skipped_without_address(tmp_path: Path) -> None:
    """An empty address skips the check."""
    assert outputs(InstallCheck().run(make_ctx(tmp_path, {"address": ""})))["skipped"] is True


def test_check_bad_address_refused(tmp_path: Path) -> None:
    """A malformed address is a PermanentError naming it."""
    m = make_material(tmp_path / "in", "a")
    with pytest.raises(PermanentError, match="'nohostport' is not host:port"):
        InstallCheck().run(make_ctx(tmp_path, {"address": "nohostport", "cert": m["cert"],
                                               "rollback": False}))


def test_check_unreachable_without_rollback_is_retryable(tmp_path: Path) -> None:
    """No server listening and rollback off: a retryable StepError naming the address."""
    from tests.support.apache import free_port
    m = make_material(tmp_path / "in", "a")
    port = free_port()
    with pytest.raises(StepError) as err:
        InstallCheck().run(make_ctx(tmp_path, {
            "address": f"127.0.0.1:{port}", "cert": m["cert"], "rollback": False,
            "attempts": 2, "delay": 0}))
    assert err.value.retryable and f"127.0.0.1:{port}" in str(err.value)
    assert "no TLS handshake" in str(err.value)


def test_check_without_dir_does_not_roll_back(tmp_path: Path) -> None:
    """rollback on but no 'dir': the failure says nothing could be restored."""
    from tests.support.apache import free_port
    m = make_material(tmp_path / "in", "a")
    with pytest.raises(StepError, match="no 'dir' was given"):
        InstallCheck().run(make_ctx(tmp_path, {
            "address": f"127.0.0.1:{free_port()}", "cert": m["cert"], "attempts": 1}))


def test_failed_check_restores_previous_version_and_reloads(tmp_path: Path,
                                                             target: Path) -> None:
    """A failed check puts back the files the last install replaced and runs the reload."""
    from tests.support.apache import free_port
    a = make_material(tmp_path / "in", "a")
    b = make_material(tmp_path / "in", "b", chain=False)
    install(tmp_path, target, a)
    out_b = install(tmp_path, target, b)
    flag = tmp_path / "reloaded"
    with pytest.raises(PermanentError, match="was restored from") as err:
        InstallCheck().run(make_ctx(tmp_path, {
            "address": f"127.0.0.1:{free_port()}", "cert": b["cert"], "dir": str(target),
            "reload": ["touch", str(flag)], "attempts": 1}))
    assert out_b["previous"] in str(err.value) and "reloaded" in str(err.value)
    assert flag.exists()
    assert (target / "server.key").read_bytes() == Path(a["key"]).read_bytes()
    assert (target / "chain.pem").read_bytes() == Path(a["chain"]).read_bytes()
    assert not (target / ".certwright" / "pending").exists()


def test_failed_check_with_nothing_to_restore_leaves_files(tmp_path: Path,
                                                           target: Path) -> None:
    """After a first install there is no previous version: the error says nothing was
    restored and the files stay."""
    from tests.support.apache import free_port
    a = make_material(tmp_path / "in", "a")
    install(tmp_path, target, a)
    with pytest.raises(PermanentError, match=r"rollback failed: .*nothing restored"):
        InstallCheck().run(make_ctx(tmp_path, {
            "address": f"127.0.0.1:{free_port()}", "cert": a["cert"], "dir": str(target),
            "attempts": 1}))
    assert (target / "server.key").read_bytes() == Path(a["key"]).read_bytes()


def test_concurrent_install_into_same_folder_waits_then_retries(
        tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the folder's lock, install.files gives up with a
    retryable StepError and writes nothing."""
    import fcntl
    install(tmp_path, target, make_material(tmp_path / "in", "a"))
    before = snapshot(target)
    monkeypatch.setattr(files_mod, "LOCK_WAIT", 0.2)
    # flock locks belong to open file descriptions: a second open() conflicts like another
    # process would
    fd = os.open(target / ".certwright" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StepError, match="another process") as err:
            install(tmp_path, target, make_material(tmp_path / "in", "b"))
        assert err.value.retryable is True
    finally:
        os.close(fd)
    assert snapshot(target) == before
