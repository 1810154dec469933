"""The daemon's install steps as an unprivileged user reloading a root Apache through sudo.

The deployment kit runs the daemon as ``certwright`` with no capabilities; a root web
server is reloaded through the rule in ``contrib/sudoers.d/certwright``, which allows
exactly ``apache2ctl configtest`` and ``apache2ctl -k graceful``. Here a private Apache
runs as root on loopback (tests/support/apache.py); the shipped rule is installed for the
duration of the test with two substitutions: the user is ``nobody``, and
``/usr/sbin/apache2ctl`` is a root-owned stand-in that takes the same two command lines
to this Apache's own configuration (the real one would act on /etc/apache2). A child
process then drops to ``nobody`` (no groups, no capability, no saved root id) and runs
the real install.files, install.reload and install.check steps: the new certificate is
served. As that user, without sudo, or with sudo for any other command, nothing works.

Needs root (to start Apache and write /etc/sudoers.d), sudo and apache2: skipped without
them, failed under CI (scripts/system-deps.sh installs both).
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apache import ApacheServer, make_self_signed, pem_fingerprint

pytestmark = pytest.mark.slow
RULE = Path(__file__).resolve().parents[2] / "contrib" / "sudoers.d" / "certwright"
USER = "nobody"
SUDOERS_D = Path("/etc/sudoers.d")

CHILD = r"""
import json, os, sys
from pathlib import Path
# Everything the steps import is imported now: after the switch to the unprivileged user
# the interpreter's own folders may not be readable any more.
import encodings.idna, hashlib, shlex, socket, ssl, subprocess  # noqa: F401
from cryptography import x509  # noqa: F401
from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
from certwright.clock import SystemClock
from certwright.engine.plugins.step import StepContext
from certwright.steps.install import InstallCheck, InstallFiles, InstallReload
import certwright.steps.install as _install
args = json.loads(sys.argv[1])
os.setgroups([])
os.setresgid(args["gid"], args["gid"], args["gid"])
os.setresuid(args["uid"], args["uid"], args["uid"])
work = Path(args["work"])

def ctx(params):
    return StepContext(run_id="r1", pipeline="cacert", state="signed", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=work / "run", state_dir=work, clock=SystemClock())

def rc(argv):
    return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL).returncode

out = {"uid": os.getuid(), "euid": os.geteuid(), "saved": os.getresuid()[2],
       "caps": [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1],
       "without_sudo": rc(args["reload"][2:]),
       "sudo_other": rc(["sudo", "-n", "/bin/true"]),
       "sudo_stop": rc(["sudo", "-n", args["ctl"], "-k", "stop"]),
       "sudo_extra_arg": rc(["sudo", "-n", args["ctl"], "configtest", "-X"])}
InstallFiles().run(ctx({"cert": args["cert"], "key": args["key"], "dir": args["dir"]}))
InstallReload().run(ctx({"test": args["test"], "command": args["reload"]}))
done = InstallCheck().run(ctx({"address": args["address"], "server_name": "example.test",
                               "cert": args["cert"], "dir": args["dir"],
                               "reload": args["reload"], "attempts": 20, "delay": 0.3}))
out["served"] = done.outputs["fingerprint_sha256"]
print(json.dumps(out))
"""


def need(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing and CI is set (scripts/system-deps.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder every user can traverse (pytest's tmp_path is root's alone), removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root: starts Apache as root and installs a sudoers rule")
    folder = Path(tempfile.mkdtemp(prefix="certwright-sudo-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def installed_rule(text: str, visudo: str) -> Iterator[Path]:
    """The rule in /etc/sudoers.d (checked by visudo first), removed afterwards."""
    path = SUDOERS_D / f"certwright-test-{os.getpid()}"  # no dot: sudo would skip it
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    os.chmod(staged, 0o440)
    check = subprocess.run([visudo, "-cf", str(staged)], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        staged.unlink()
        raise AssertionError(f"visudo refused the rendered rule: {check.stdout}{check.stderr}")
    staged.rename(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def stand_in(folder: Path, server: ApacheServer) -> Path:
    """A root-owned apache2ctl taking exactly its two command lines to ``server``."""
    ctl = folder / "bin" / "apache2ctl"
    ctl.parent.mkdir()
    os.chmod(ctl.parent, 0o755)
    env = " ".join(f"{k}={v}" for k, v in server._env().items() if k.startswith("APACHE_"))
    conf = f"{server.binary} -f {server.conf}"
    ctl.write_text(f"""#!/bin/sh
# /usr/sbin/apache2ctl's two command lines, for the test's private Apache
export {env}
case "$*" in
  configtest) exec {conf} -t ;;
  "-k graceful") exec {conf} -k graceful ;;
  *) echo "apache2ctl stand-in: not one of its two commands: $*" >&2; exit 64 ;;
esac
""")
    os.chmod(ctl, 0o755)
    return ctl


def test_unprivileged_steps_reload_root_apache_through_the_shipped_rule(world: Path) -> None:
    """As nobody: install the new certificate, config-test and reload the root Apache with
    sudo -n per the shipped rule, and find it served; nothing else is allowed."""
    sudo, visudo = need("sudo"), need("visudo")
    pw = pwd.getpwnam(USER)
    server = ApacheServer(world / "apache")
    server.root.mkdir()
    server.start()
    try:
        # the daemon's certificate folder, and the files in it
        for p in (server.cert_dir, *server.cert_dir.iterdir()):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        work = world / "work"
        work.mkdir()
        cert, key = make_self_signed("example.test")
        (work / "new.crt").write_bytes(cert)
        (work / "new.key").write_bytes(key)
        for p in (work, work / "new.crt", work / "new.key"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(work / "new.key", 0o600)
        ctl = stand_in(world, server)
        rule = RULE.read_text().replace("/usr/sbin/apache2ctl", str(ctl))
        rule = rule.replace("\ncertwright ALL=", f"\n{USER} ALL=")
        assert f"{USER} ALL=(root) NOPASSWD: CERTWRIGHT_RELOAD" in rule
        before = server.fingerprint()
        args = {"uid": pw.pw_uid, "gid": pw.pw_gid, "work": str(work), "ctl": str(ctl),
                "cert": str(work / "new.crt"), "key": str(work / "new.key"),
                "dir": str(server.cert_dir), "address": server.address,
                "test": [sudo, "-n", str(ctl), "configtest"],
                "reload": [sudo, "-n", str(ctl), "-k", "graceful"]}
        with installed_rule(rule, visudo):
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                                  capture_output=True, text=True, timeout=120, check=False,
                                  cwd=world)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (out["uid"], out["euid"], out["saved"]) == (pw.pw_uid,) * 3
        assert int(out["caps"], 16) == 0
        assert out["without_sudo"] != 0, "the reload worked without sudo"
        assert out["sudo_other"] != 0 and out["sudo_stop"] != 0
        assert out["sudo_extra_arg"] != 0
        fresh = pem_fingerprint(cert)
        assert out["served"] == fresh != before
        assert server.wait_for_fingerprint(fresh) == fresh
        assert server.is_running()
    finally:
        server.stop()
