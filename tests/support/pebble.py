"""Start a real Pebble (Debian ``pebble``) on loopback for ACME tests and benchmarks.

:class:`Pebble` writes a config into a folder, makes a test root and a leaf for Pebble's
own HTTPS listener (the Debian package ships none), starts ``pebble -config FILE
-dnsserver DNS`` with ``PEBBLE_VA_NOSLEEP=1`` and ``PEBBLE_WFE_NONCEREJECT=<n>``, waits
until the directory answers, and stops it on ``stop()``. ``PEBBLE_VA_ALWAYS_VALID`` is never
set: challenges are really validated, over http-01 against ``http_port`` on the address the
test DNS server gives (127.0.0.1), or over dns-01 against that DNS server.

Hazards: Pebble's issuing root changes on every start, so chains are verified against
:meth:`Pebble.issuing_roots` of the same process. Ports are picked free just before the
start; a rare race with another process is reported as Pebble failing to start.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pebble() -> str | None:
    """The path of the ``pebble`` binary, or None."""
    return shutil.which("pebble")


def _write_tls(folder: Path) -> tuple[Path, Path, Path]:
    """Make a test root and a leaf for 127.0.0.1/localhost; returns (root, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certwright test root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(root_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    root_path = folder / "test-root.pem"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return root_path, cert_path, key_path


class Pebble:
    """One Pebble process. ``start()`` returns self; use as a context manager too.

    * ``directory``: the ACME directory URL (https://127.0.0.1:PORT/dir)
    * ``ca_bundle``: PEM of the test root that signed Pebble's listener certificate
    * ``http_port``: the port Pebble's VA connects to for http-01
    """

    def __init__(self, folder: Path, *, dns_server: str, http_port: int | None = None,
                 nonce_reject: int = 0, eab_keys: dict[str, str] | None = None,
                 binary: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.dns_server = dns_server
        self.http_port = http_port or free_port()
        self.nonce_reject = nonce_reject
        self.eab_keys = eab_keys or {}
        self.binary = binary or find_pebble()
        self.extra_env = dict(extra_env or {})
        self.extra_env.pop("PEBBLE_VA_ALWAYS_VALID", None)  # challenges are always validated
        self.port = 0
        self.mgmt_port = 0
        self.ca_bundle = folder / "test-root.pem"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context()

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def management(self) -> str:
        return f"https://127.0.0.1:{self.mgmt_port}"

    def start(self, timeout: float = 20.0) -> Self:
        """Write the config, start Pebble and wait until its directory answers.

        Raises RuntimeError (with Pebble's output) if it exits or is not ready in time.
        """
        if not self.binary:
            raise RuntimeError("pebble is not installed (Debian package 'pebble')")
        self.folder.mkdir(parents=True, exist_ok=True)
        root, cert, key = _write_tls(self.folder)
        self.ca_bundle = root
        self._ssl = ssl.create_default_context(cafile=str(root))
        self.port, self.mgmt_port = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
            "externalAccountMACKeys": self.eab_keys,
        }}
        config_path = self.folder / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1",
                   PEBBLE_WFE_NONCEREJECT=str(self.nonce_reject),
                   PEBBLE_WFE_ORDERS_PER_PAGE="100", **self.extra_env)
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        with open(self.folder / "pebble.log", "wb") as log:  # the child keeps its own copy
            self._proc = subprocess.Popen(
                [self.binary, "-config", str(config_path), "-dnsserver", self.dns_server],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                self.get(self.directory)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pebble did not start: {self.output()}")

    def get(self, url: str) -> bytes:
        """GET a URL from Pebble (ACME or management), trusting the test root."""
        with urllib.request.urlopen(url, context=self._ssl, timeout=5) as resp:
            return bytes(resp.read())

    def issuing_roots(self, index: int = 0) -> list[x509.Certificate]:
        """Pebble's issuing root (``/roots/<index>`` of the management interface)."""
        return x509.load_pem_x509_certificates(self.get(f"{self.management}/roots/{index}"))

    def output(self) -> str:
        """What Pebble printed so far."""
        try:
            return (self.folder / "pebble.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop Pebble (terminate, then kill after 5 s). Safe to call twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
