"""The deployment kit in contrib/ checked by the tools that will read it.

``systemd-analyze verify`` reads the unit with its sudo drop-in (ExecStart pointed at the
certwright console script of this install by one more drop-in, since the shipped
/opt/certwright/bin/certwright is not here); ``systemd-sysusers --root`` and
``systemd-tmpfiles --create --root`` apply the user and the folders in a scratch root;
``visudo -cf`` parses the sudoers rule; the example config.yaml loads through the real
loader with every key the loader knows, each documented by a comment.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certwright.engine.daemon.config import from_config
from certwright.engine.model.configfile import Config
from certwright.engine.model.configkeys import DAEMON_KEYS, TOP_KEYS
from certwright.engine.model.loader import bundled_pipelines, load_pipeline

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNIT = CONTRIB / "certwright.service"
SHIPPED_EXEC = "/opt/certwright/bin/certwright"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing and CI is set (scripts/system-deps.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def console_script() -> Path:
    script = Path(sys.executable).parent / "certwright"
    if not script.exists():
        pytest.fail(f"the certwright console script is not at {script}")
    return script


def verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([tool("systemd-analyze"), "verify", str(unit_dir / UNIT.name)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def unit_copy(tmp_path: Path, exec_start: Path | None) -> Path:
    """The shipped unit and its drop-ins in a unit folder; with ``exec_start``, one more
    drop-in pointing ExecStart at it (the rest of the command line unchanged)."""
    folder = tmp_path / "units"
    drop = folder / f"{UNIT.name}.d"
    drop.mkdir(parents=True)
    shutil.copy(UNIT, folder)
    for conf in (CONTRIB / f"{UNIT.name}.d").glob("*.conf"):
        shutil.copy(conf, drop)
    if exec_start is not None:
        line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
        (drop / "zz-installed.conf").write_text(
            f"[Service]\nExecStart=\n{line.replace(SHIPPED_EXEC, str(exec_start))}\n")
    return folder


def test_unit_verifies_with_the_installed_console_script(tmp_path: Path) -> None:
    """The unit and its sudo drop-in pass systemd-analyze verify without a warning."""
    proc = verify(unit_copy(tmp_path, console_script()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_unit_names_the_venv_install() -> None:
    """ExecStart is the venv the README installs; verify refuses it where it is absent."""
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in text
    readme = (CONTRIB.parent / "README.md").read_text()
    assert "python3 -m venv /opt/certwright" in readme and SHIPPED_EXEC in readme


def test_unit_verify_catches_a_missing_binary(tmp_path: Path) -> None:
    """The check is real: an ExecStart that does not exist fails verify."""
    proc = verify(unit_copy(tmp_path, tmp_path / "nowhere" / "certwright"))
    assert proc.returncode != 0 and "not executable" in proc.stderr


def test_sysusers_and_tmpfiles_in_a_scratch_root(tmp_path: Path) -> None:
    """The user and group appear, then every folder with its owner and mode."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run([tool("systemd-sysusers"), "--root", str(root),
                    str(CONTRIB / "sysusers.d" / "certwright.conf")],
                   check=True, capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":")
             for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":")
              for line in (root / "etc/group").read_text().splitlines()}
    assert "certwright" in users and "certwright" in groups
    uid, gid = int(users["certwright"][2]), int(groups["certwright"][2])
    assert int(users["certwright"][3]) == gid
    assert users["certwright"][5:] == ["/var/lib/certwright", "/usr/sbin/nologin"]
    assert uid < 1000  # a system user

    proc = subprocess.run([tool("systemd-tmpfiles"), "--create", "--root", str(root),
                           str(CONTRIB / "tmpfiles.d" / "certwright.conf")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    expected = {
        "var/lib/certwright": (uid, gid, 0o700),
        "var/lib/certwright/inbox": (uid, gid, 0o700),
        "var/log/certwright": (uid, gid, 0o750),
        "var/mail/certwright": (uid, gid, 0o700),
        "etc/certwright": (0, 0, 0o755),
        "etc/certwright/pipelines": (0, 0, 0o755),
        "etc/certwright/live": (uid, gid, 0o755),
    }
    for rel, (owner, group, mode) in expected.items():
        st = (root / rel).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (owner, group, mode), rel


def test_unit_writes_only_where_tmpfiles_made_folders() -> None:
    """Every ReadWritePaths folder is made by tmpfiles.d (the unit fails on a missing one)."""
    rw = [p for line in UNIT.read_text().splitlines() if line.startswith("ReadWritePaths=")
          for p in line.removeprefix("ReadWritePaths=").split()]
    made = {line.split()[1] for line in (CONTRIB / "tmpfiles.d/certwright.conf").read_text()
            .splitlines() if line.startswith("d ")}
    assert rw and set(rw) <= made, set(rw) - made
    config = Config.load(CONTRIB / "config.yaml")
    live = config.live_dir()
    assert live is not None and str(live.value) in rw


def test_sudoers_rule_parses_and_allows_exactly_two_commands(tmp_path: Path) -> None:
    """visudo -cf accepts the rule; it names the config test and the graceful reload, no
    wildcard, for the certwright user only, without a password."""
    rule = CONTRIB / "sudoers.d" / "certwright"
    checked = tmp_path / "certwright"
    shutil.copy(rule, checked)
    os.chmod(checked, 0o440)
    proc = subprocess.run([tool("visudo"), "-cf", str(checked)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [x for x in rule.read_text().splitlines() if x.strip() and not x.startswith("#")]
    alias = ("Cmnd_Alias CERTWRIGHT_RELOAD = /usr/sbin/apache2ctl configtest, "
             "/usr/sbin/apache2ctl -k graceful")
    assert lines == [alias, "certwright ALL=(root) NOPASSWD: CERTWRIGHT_RELOAD"]
    broken = tmp_path / "broken"
    broken.write_text(rule.read_text().replace("NOPASSWD:", "NOPASSWD"))
    os.chmod(broken, 0o440)
    assert subprocess.run([tool("visudo"), "-cf", str(broken)], capture_output=True,
                          timeout=60, check=False).returncode != 0


def test_example_config_has_every_key_documented() -> None:
    """contrib/config.yaml loads through the real loader, holds every top-level and daemon
    key the loader knows, each after a comment, and its pipeline inputs are real inputs."""
    path = CONTRIB / "config.yaml"
    config = Config.load(path)
    (cf,) = config.files
    assert cf.root is not None and not cf.legacy
    assert [k for k, _, _ in cf.root.entries()] == list(TOP_KEYS)
    daemon = cf.section("daemon")
    assert daemon is not None
    assert sorted(k for k, _, _ in daemon.entries()) == sorted(DAEMON_KEYS)
    loaded = from_config(config)
    assert loaded.maildirs == (Path("/var/mail/certwright"),)
    assert loaded.inbox == Path("/var/lib/certwright/inbox")

    lines = path.read_text().splitlines()
    for key in (*TOP_KEYS, *DAEMON_KEYS):
        at = [i for i, x in enumerate(lines) if re.match(rf"^\s*{key}:", x)]
        assert at, f"{key} is not in {path.name}"
        before = lines[at[-1] - 1].strip()
        prev_key = re.match(r"^\s*([a-z_]+):", lines[at[-1] - 1])
        assert before.startswith("#") or prev_key, f"{key} has no comment above it"

    for name, spec_path in bundled_pipelines().items():
        spec = load_pipeline(spec_path)
        settings = config.input_settings(name, spec.inputs)  # raises on an unknown input
        if name in ("cacert", "acme"):
            assert settings["reload"].value == "sudo -n /usr/sbin/apache2ctl -k graceful"
