"""A real Dovecot IMAP server in a temp folder, for the daemon's IMAP tests.

Its own config file (``dovecot -c``), listening on 127.0.0.1 (IMAPS on a free port), a TLS
certificate made with ``cryptography``, one passwd-file user, Maildir storage in the temp
folder owned by an unprivileged system user. Run as root, Dovecot drops to
``default_internal_user``/``default_login_user`` (``dovecot``/``dovenull``, both created by
the Debian package). Missing Dovecot: the fixture fails when ``CI`` is set, else skips.
"""
from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tls(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                           x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "imap.crt", folder / "imap.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


@dataclass
class Dovecot:
    """A running Dovecot: where to connect, who to log in as, its trust anchor."""

    host: str
    port: int
    user: str
    password: str
    cafile: Path
    root: Path
    proc: subprocess.Popen[bytes]

    def url(self, password_file: Path, mailbox: str = "INBOX") -> str:
        return (f"imaps://{self.user}@{self.host}:{self.port}/{mailbox}"
                f"?password_file={password_file}")

    def client(self) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        c = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ctx)
        c.login(self.user, self.password)
        return c

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        """Put a message into the mailbox (as an MTA's delivery would)."""
        c = self.client()
        try:
            typ, data = c.append(mailbox, None, None, raw.replace(b"\r\n", b"\n")
                                 .replace(b"\n", b"\r\n"))
            if typ != "OK":
                raise AssertionError(f"APPEND failed: {data}")
        finally:
            c.logout()

    def deliver_unreadable(self, raw: bytes) -> Path:
        """Put a message straight into the Maildir's ``new/`` with mode 0 (a broken
        delivery): Dovecot lists it (and gives it the next UID), but cannot open it to
        answer a FETCH."""
        c = self.client()  # the first login creates the Maildir
        try:
            c.select("INBOX")
        finally:
            c.logout()
        path = self.root / "mail" / self.user / "new" / f"{time.time_ns()}.M1P1.broken"
        path.write_bytes(raw)
        owner = os.stat(path.parent)
        os.chown(path, owner.st_uid, owner.st_gid)
        os.chmod(path, 0)
        c = self.client()  # Dovecot gives it its UID now, before any later message
        try:
            c.select("INBOX")
        finally:
            c.logout()
        return path

    def flags(self, mailbox: str = "INBOX") -> list[str]:
        """The flags of every message, in UID order."""
        c = self.client()
        try:
            c.select(mailbox)
            _, data = c.uid("FETCH", "1:*", "(FLAGS)")
            return [d.decode() for d in data if isinstance(d, bytes)]
        finally:
            c.logout()


def start_dovecot(root: Path, *, extra: str = "") -> Dovecot:
    """Configure and start Dovecot under ``root``; returns once it accepts connections.

    ``extra``: more lines for its configuration (e.g. ``imap_fetch_failure = no-after``,
    so a FETCH that fails is answered NO instead of BYE)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # Dovecot's unprivileged processes must reach the passwd file
    cert, key = _tls(root)
    port = _free_port()
    owner = pwd.getpwnam("dovecot") if _has_user("dovecot") else pwd.getpwnam("nobody")
    mail = root / "mail"
    mail.mkdir()
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    user, password = "certs", "imap-test-password"
    (root / "passwd").write_text(f"{user}:{{PLAIN}}{password}:{owner.pw_uid}:{owner.pw_gid}::"
                                 f"{mail / user}::\n")
    run = root / "run"
    run.mkdir()
    conf = root / "dovecot.conf"
    conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {run}
state_dir = {root / 'state'}
instance_name = certwright-test-{port}
log_path = {root / 'dovecot.log'}
info_log_path = {root / 'dovecot.log'}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {min(owner.pw_uid, 100)}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
mail_location = maildir:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / 'passwd'}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / 'passwd'}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
{extra}
""")
    (root / "state").mkdir()
    with open(root / "dovecot.stderr", "wb") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=stderr)
    d = Dovecot("127.0.0.1", port, user, password, cert, root, proc)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited {proc.returncode}: "
                               f"{(root / 'dovecot.stderr').read_text()[-2000:]}"
                               f"{_log(root)}")
        try:
            d.client().logout()
            return d
        except (OSError, imaplib.IMAP4.error):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"dovecot did not accept logins within 20 s{_log(root)}")


def _log(root: Path) -> str:
    p = root / "dovecot.log"
    return "\n" + p.read_text()[-2000:] if p.exists() else ""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def stop_dovecot(d: Dovecot) -> None:
    d.proc.terminate()
    try:
        d.proc.wait(10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(5)


@contextmanager
def running_dovecot(extra: str = "") -> Iterator[Dovecot]:
    """A fresh Dovecot (see :func:`start_dovecot` for ``extra``), stopped and removed at
    the end. Skips without Dovecot, or as non-root; fails then under CI."""
    if not os.path.exists(DOVECOT) or os.geteuid() != 0:
        why = "dovecot is not installed" if not os.path.exists(DOVECOT) else "needs root"
        if os.environ.get("CI"):
            pytest.fail(f"{why} (apt-get install dovecot-imapd)")
        pytest.skip(why)
    # Not under tmp_path: pytest makes it 0700 for root, which the dovecot user cannot cross.
    root = Path(tempfile.mkdtemp(prefix="certwright-dovecot-"))
    os.chmod(root, 0o755)
    try:
        d = start_dovecot(root / "dovecot", extra=extra)
        try:
            yield d
        finally:
            stop_dovecot(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot for one test (skip without Dovecot, or as non-root; fail under CI)."""
    with running_dovecot() as d:
        yield d


@pytest.fixture
def dovecot_fetch_no() -> Iterator[Dovecot]:
    """A fresh Dovecot that answers a FETCH it cannot serve with NO and its reason
    (``imap_fetch_failure = no-after``) rather than with BYE, Dovecot's default."""
    with running_dovecot("imap_fetch_failure = no-after") as d:
        yield d
