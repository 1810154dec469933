"""A real Postfix (Debian's) in a temp folder, local-only on loopback, for the mail tests.

Its own configuration folder (``postfix -c DIR``), queue and data folders; smtpd listens on
127.0.0.1 at a free port; nothing is relayed (``default_transport = error``); one virtual
mailbox domain delivers into Maildirs under the temp folder as ``nobody``, with the aliases
a probe needs (root@, hostmaster@, postmaster@, admin@, webmaster@ -> one mailbox). The
``main.cf`` lines that make the delivery are :data:`RECIPE`, the same the README's Postfix
recipe shows. Started with ``postfix start`` (no systemd here), stopped at the end.

:meth:`Postfix.defer` makes smtpd answer 451 to every recipient (a check_recipient_access
map, then ``postfix reload``); :meth:`Postfix.stop` and :meth:`Postfix.start` stop and
start it mid-test. Missing Postfix: the fixture fails when ``CI`` is set, else skips.
"""
from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
USER = "nobody"  # the virtual mailboxes' owner (Postfix refuses root for delivery)
PROBE_ALIASES = ("root", "hostmaster", "postmaster", "admin", "webmaster")

#: The main.cf lines of a virtual mailbox domain delivered into a Maildir (README recipe).
RECIPE = """\
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {base}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_alias_maps = texthash:{conf}/valias
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = error:this test MTA relays nothing
relay_transport = error:this test MTA relays nothing
local_transport = error:no local delivery here
smtpd_recipient_restrictions = check_recipient_access texthash:{conf}/defer,
    permit_mynetworks, reject_unauth_destination
smtpd_banner = $myhostname ESMTP test
maillog_file = {root}/log/postfix.log
maillog_file_prefixes = {root}/log
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtputf8_enable = yes
"""

MASTER = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postfix:
    """One running Postfix: its folders, port and the mailbox every probe alias reaches."""

    root: Path
    conf: Path
    port: int
    domain: str
    mailbox: str  # the local part whose Maildir the aliases deliver into

    @property
    def maildir(self) -> Path:
        """The Maildir Postfix delivers ``mailbox@domain`` (and the aliases) into."""
        return self.root / "mail" / self.domain / self.mailbox

    @property
    def smarthost(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60, check=False)

    def log(self) -> str:
        path = self.root / "log" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """``postfix start``; returns once smtpd answers on the port."""
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr}{done.stdout}\n{self.log()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as smtp:
                    if smtp.noop()[0] == 250:
                        return
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not answer on port {self.port}\n{self.log()}")

    def stop(self) -> None:
        """``postfix stop``: the port refuses connections afterwards."""
        self._postfix("stop")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.1)

    def defer(self, on: bool = True) -> None:
        """Answer 451 to every recipient (``on``), or accept again; then ``postfix reload``."""
        entry = f"{self.domain} 451 4.3.0 deferred by the test\n" if on else ""
        (self.conf / "defer").write_text(entry)
        done = self._postfix("reload")
        if done.returncode != 0:
            raise RuntimeError(f"postfix reload failed: {done.stderr}")

    def flush(self) -> None:
        """Ask the queue manager to try deferred mail now."""
        self._postfix("flush")

    def delivered(self) -> list[Path]:
        """The messages delivered into the mailbox's Maildir (new/ and cur/)."""
        return [p for sub in ("new", "cur") if (self.maildir / sub).is_dir()
                for p in sorted((self.maildir / sub).iterdir())]


def start_postfix(root: Path, *, domain: str = "example.test",
                  mailbox: str = "certs") -> Postfix:
    """Configure and start a Postfix in ``root`` (see the module doc)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # postfix and nobody must reach their folders below
    conf = root / "etc"
    for sub in ("etc", "queue", "data", "log", "mail"):
        (root / sub).mkdir(exist_ok=True)
    user = pwd.getpwnam(USER)
    postfix_user = pwd.getpwnam("postfix")
    os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
    os.chown(root / "mail", user.pw_uid, user.pw_gid)
    port = _free_port()
    values = {"root": root, "conf": conf, "domain": domain, "base": root / "mail",
              "uid": user.pw_uid, "gid": user.pw_gid, "port": f"127.0.0.1:{port}"}
    (conf / "main.cf").write_text(MAIN.format(**values) + RECIPE.format(**values))
    (conf / "master.cf").write_text(MASTER.format(**values))
    (conf / "vmailbox").write_text(f"{mailbox}@{domain} {domain}/{mailbox}/\n")
    (conf / "valias").write_text("".join(f"{alias}@{domain} {mailbox}@{domain}\n"
                                         for alias in PROBE_ALIASES))
    (conf / "defer").write_text("")
    pf = Postfix(root, conf, port, domain, mailbox)
    checked = pf._postfix("check")
    if checked.returncode != 0:
        raise RuntimeError(f"postfix check failed: {checked.stderr}")
    pf.start()
    return pf


def stop_postfix(pf: Postfix) -> None:
    pf.stop()


def require_postfix() -> None:
    if not os.path.exists(POSTFIX) or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("Postfix (run as root) is required in CI: bash scripts/system-deps.sh")
        pytest.skip("Postfix is not installed or not root (bash scripts/system-deps.sh)")


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    """A started Postfix in a folder of its own under /tmp (pytest's tmp_path is 0700 root:
    Postfix's own user could not reach its data folder there); removed at the end."""
    require_postfix()
    root = Path(tempfile.mkdtemp(prefix="certwright-postfix-"))
    try:
        pf = start_postfix(root)
        try:
            yield pf
        finally:
            stop_postfix(pf)
    finally:
        shutil.rmtree(root, ignore_errors=True)
