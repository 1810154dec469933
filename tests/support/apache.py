"""Start a real Apache httpd (Debian ``apache2``) on loopback, serving TLS for example.test.

:class:`ApacheServer` writes a self-contained config into a temp folder (modules loaded by
absolute path from ``/usr/lib/apache2/modules``; pid file, logs, runtime folder and mutexes
inside the temp folder), a first self-signed certificate into ``<tmp>/certs/server.crt`` and
``server.key``, starts ``apache2 -f CONF -k start``, and waits until the port answers. It
never reads or writes ``/etc/apache2`` and never touches the system service.

The ``apache`` pytest fixture yields a started server and stops it afterwards. When the
``apache2`` binary is missing the fixture fails if ``CI`` is set and skips otherwise.

Hazards: the port is picked free just before the start; a rare race with another process
shows as Apache failing to start (its error log is in the exception). A graceful restart
is asynchronous: the old children keep serving the old certificate until they finish, so
callers that check the served certificate must retry for a few seconds. When run as root
the children run as ``www-data`` (or ``nobody``); the certificate files are read by the
root parent, so their 0600 key is fine.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.procs import alive

MODULE_DIRS = ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules")
SERVER_NAME = "example.test"


def find_apache() -> str | None:
    """The path of the Apache httpd binary (``apache2`` on Debian), or None."""
    for name in ("apache2", "httpd"):
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
        if found:
            return found
    return None


def find_module_dir() -> Path | None:
    """The folder holding ``mod_ssl.so``, or None."""
    for d in MODULE_DIRS:
        if (Path(d) / "mod_ssl.so").is_file():
            return Path(d)
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_self_signed(name: str = SERVER_NAME, *, days: int = 2) -> tuple[bytes, bytes]:
    """A fresh EC key and a self-signed certificate for ``name``: (cert PEM, key PEM)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def served_fingerprint(host: str, port: int, server_name: str = SERVER_NAME,
                       timeout: float = 5.0) -> str:
    """SHA-256 (hex) of the DER certificate the server presents for ``server_name``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (socket.create_connection((host, port), timeout=timeout) as raw,
          ctx.wrap_socket(raw, server_hostname=server_name) as tls):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise RuntimeError(f"{host}:{port} presented no certificate")
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    """SHA-256 (hex) of the DER form of the first certificate in ``pem``."""
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _run_user() -> tuple[str, str] | None:
    """The (user, group) children should run as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for user in ("www-data", "nobody", "daemon"):
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            continue
        return user, grp.getgrgid(pw.pw_gid).gr_name
    return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class ApacheServer:
    """A private Apache httpd serving TLS on 127.0.0.1:<port> from ``<root>/certs``.

    ``start()`` raises RuntimeError (with the tail of the error log) when Apache does not
    come up; ``stop()`` is safe to call twice and after a failed start.
    """

    def __init__(self, tmp_dir: Path, *, binary: str | None = None,
                 server_name: str = SERVER_NAME) -> None:
        found = binary or find_apache()
        modules = find_module_dir()
        if not found or modules is None:
            raise RuntimeError("Apache httpd (Debian package apache2) is not installed")
        self.binary = found
        self.modules = modules
        self.root = Path(tmp_dir)
        self.server_name = server_name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = self.root / "httpd.conf"
        self.cert_dir = self.root / "certs"
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "logs"
        self.pid_file = self.run_dir / "httpd.pid"
        self.error_log = self.log_dir / "error.log"
        self.extra_config = ""

    # -- commands a test hands to the install steps --------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def reload_argv(self) -> list[str]:
        return [self.binary, "-f", str(self.conf), "-k", "graceful"]

    @property
    def test_argv(self) -> list[str]:
        return [self.binary, "-f", str(self.conf), "-t"]

    # -- config --------------------------------------------------------------------------
    def render_config(self) -> str:
        """The httpd.conf text for the current settings (plus ``extra_config``)."""
        m, r = self.modules, self.root
        user = _run_user()
        lines = [
            f'ServerRoot "{r}"',
            f"LoadModule mpm_event_module {m}/mod_mpm_event.so",
            f"LoadModule authz_core_module {m}/mod_authz_core.so",
            f"LoadModule socache_shmcb_module {m}/mod_socache_shmcb.so",
            f"LoadModule ssl_module {m}/mod_ssl.so",
            f'PidFile "{self.pid_file}"',
            f'DefaultRuntimeDir "{self.run_dir}"',
            f"Mutex file:{self.run_dir} default",  # Apache refuses a quoted folder here
            f'ErrorLog "{self.error_log}"',
            "LogLevel warn",
            f"ServerName {self.server_name}",
            f"Listen {self.host}:{self.port}",
            "StartServers 1",
            "ServerLimit 4",  # room for old children finishing a graceful restart
            "ThreadsPerChild 5",
            "MaxRequestWorkers 10",
            "GracefulShutdownTimeout 3",
            f'SSLSessionCache "shmcb:{self.run_dir}/ssl_scache(65536)"',
            f'DocumentRoot "{r}/htdocs"',
            f"<VirtualHost {self.host}:{self.port}>",
            f"  ServerName {self.server_name}",
            "  SSLEngine on",
            f'  SSLCertificateFile "{self.cert_dir}/server.crt"',
            f'  SSLCertificateKeyFile "{self.cert_dir}/server.key"',
            "</VirtualHost>",
        ]
        if user:
            lines[5:5] = [f"User {user[0]}", f"Group {user[1]}"]
        return "\n".join(lines) + "\n" + self.extra_config

    def write_config(self, extra: str | None = None) -> None:
        """(Re)write httpd.conf; ``extra`` (if given) replaces the lines appended to it."""
        if extra is not None:
            self.extra_config = extra
        self.conf.write_text(self.render_config(), encoding="utf-8")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        user = _run_user()
        if user:
            env.setdefault("APACHE_RUN_USER", user[0])
            env.setdefault("APACHE_RUN_GROUP", user[1])
        env["APACHE_RUN_DIR"] = str(self.run_dir)
        env["APACHE_PID_FILE"] = str(self.pid_file)
        env["APACHE_LOG_DIR"] = str(self.log_dir)
        env["APACHE_LOCK_DIR"] = str(self.run_dir)
        return env

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> ApacheServer:
        """Write config and a first certificate, start Apache, wait until TLS answers."""
        for d in (self.cert_dir, self.run_dir, self.log_dir, self.root / "htdocs"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cert_dir, 0o755)
        if not (self.cert_dir / "server.crt").exists():
            cert, key = make_self_signed(self.server_name)
            key_path = self.cert_dir / "server.key"
            key_path.write_bytes(key)
            os.chmod(key_path, 0o600)
            (self.cert_dir / "server.crt").write_bytes(cert)
        self.write_config()
        proc = subprocess.run([self.binary, "-f", str(self.conf), "-k", "start"],
                              env=self._env(), capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"apache2 -k start failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')}{self.log_tail()}")
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                served_fingerprint(self.host, self.port, self.server_name, timeout=1.0)
                return self
            except (OSError, RuntimeError) as exc:
                last = exc
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Apache did not answer TLS on {self.address} within {timeout} s "
                           f"({last}){self.log_tail()}")

    def pid(self) -> int | None:
        """The parent's pid from the pid file, or None."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        """True while the parent process exists (a zombie counts as gone)."""
        pid = self.pid()
        return pid is not None and alive(pid)

    def fingerprint(self) -> str:
        """SHA-256 of the certificate served right now for ``server_name``."""
        return served_fingerprint(self.host, self.port, self.server_name)

    def wait_for_fingerprint(self, expected: str, timeout: float = 10.0) -> str:
        """Poll until ``expected`` is served (graceful restarts are asynchronous); returns
        the last fingerprint seen, which differs from ``expected`` on timeout."""
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            try:
                seen = self.fingerprint()
            except OSError:
                seen = ""
            if seen == expected or time.monotonic() >= deadline:
                return seen
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """``-k stop`` (or SIGTERM when that fails, e.g. with a broken config) and wait
        for the parent to go; SIGKILL to its process group as a last resort."""
        pid = self.pid()
        if pid is None or not alive(pid):
            return
        proc = subprocess.run([self.binary, "-f", str(self.conf), "-k", "stop"],
                              env=self._env(), capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:  # -k stop parses the config first; a broken one fails
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # Apache runs in its own session
            os.killpg(os.getpgid(pid), signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- {self.error_log} ---\n{tail}" if tail else ""


def require_apache() -> str:
    """The apache binary, or skip (fail when ``CI`` is set) when it is missing."""
    found = find_apache()
    if found and find_module_dir() is not None:
        return found
    msg = "Apache httpd not installed (Debian: apt-get install apache2)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheServer]:
    """A started :class:`ApacheServer` in its own temp folder; stopped afterwards."""
    require_apache()
    root = tmp_path_factory.mktemp("apache")
    os.chmod(root, 0o755)
    server = ApacheServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
