"""Creating a CA directory: root and intermediate keys and certificates, store, config.

Layout of ``ca_dir`` (0700)::

    config.json              name, validity defaults (see DEFAULT_CONFIG)
    root.pem                 self-signed root certificate (publish it; trust anchor)
    intermediate.pem         intermediate certificate, signed by the root
    private/root.key         root key (0600); used only here, to sign the intermediate
    private/intermediate.key intermediate key (0600); signs every certificate and the CRL
    ca.sqlite3               the CA store (ca.store.CAStore)

Contract: :func:`init_ca` is idempotent. It creates only what is missing and never
replaces an existing key or certificate. A crash half-way leaves files that a second call
completes: keys are written before the certificates that need them, each file atomically
and only if it is missing (:func:`certwright.atomic.write_new`: temporary file, fsync, link,
folder fsync), so two calls at once never replace each other's files.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.atomic import write_atomic, write_new
from certwright.ca.httpguard import HTTP_DEFAULTS
from certwright.ca.ratelimit import DEFAULT_RATES
from certwright.clock import Clock, SystemClock

log = structlog.get_logger("ca.setup")

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "certwright local CA",
    "default_days": 180,          # CAcert's certificates lasted 180 days
    "max_days": 398,              # CA/B Forum BR 6.3.2 maximum
    "verification_days": 395,     # how long a domain verification stays usable
    "link_hours": 48,             # confirmation and probe links (CAcert: two days)
    "account_purge_hours": 48,    # unconfirmed accounts are dropped after this
    "crl_days": 7,                # CRL nextUpdate
    # passphrase recovery (ca/recovery.py): a session lives 15 minutes; its question stays
    # the same for a day; 5 wrong answers within an hour lock recovery for a day
    "recovery_minutes": 15,
    "recovery_question_hours": 24,
    "recovery_attempts": 5,
    "recovery_window_minutes": 60,
    "recovery_lock_hours": 24,
    # rate limits (ca/ratelimit.py) and the HTTP edge (ca/httpguard.py): docs/ca-limits.md
    "rate_limits": dict(DEFAULT_RATES),
    "password_hash_concurrency": None,   # None: the number of cores less one
    "password_hash_queue": 64,
    **HTTP_DEFAULTS,
    # compromised keys refused at signing (ca.weakkeys.Blocklist): a badkeys cache folder
    # or a text file, relative to the CA folder; null = badkeys' own folder if installed
    "weak_key_blocklist": None,
}


@dataclass(frozen=True)
class CAPaths:
    """Where the files of one CA directory live."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def root_cert(self) -> Path:
        return self.root / "root.pem"

    @property
    def intermediate_cert(self) -> Path:
        return self.root / "intermediate.pem"

    @property
    def private(self) -> Path:
        return self.root / "private"

    @property
    def root_key(self) -> Path:
        return self.private / "root.key"

    @property
    def intermediate_key(self) -> Path:
        return self.private / "intermediate.key"

    @property
    def db(self) -> Path:
        return self.root / "ca.sqlite3"


def _create(path: Path, data: bytes, mode: int, *, follow_folder: bool = True) -> None:
    """Create ``path`` atomically unless it exists (a concurrent ``init_ca`` won the race:
    its file stays, as every existing file does). The CA folder may be a symlink the user
    made; keys pass ``follow_folder=False``, so ``private/`` never is."""
    with contextlib.suppress(FileExistsError):
        write_new(path, data, mode, follow_folder=follow_folder)


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    curve = ec.SECP384R1() if path.name == "root.key" else ec.SECP256R1()
    if not path.exists():
        key = ec.generate_private_key(curve)
        _create(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600, follow_folder=False)
        log.info("ca_key_created", file=path.name)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return loaded


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certwright"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_cert(subject_key: ec.EllipticCurvePrivateKey, subject: x509.Name,
             issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Name, *, clock: Clock,
             years: int, path_len: int | None,
             hash_alg: hashes.SHA256 | hashes.SHA384) -> x509.Certificate:
    now = clock.now().replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(secrets.randbits(127) | 1 << 126)
        .not_valid_before(now).not_valid_after(now + timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
    )
    if issuer_key is not subject_key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return builder.sign(issuer_key, hash_alg)


def init_ca(ca_dir: Path, *, clock: Clock | None = None, name: str = "certwright local CA") -> None:
    """Create (or complete) the CA in ``ca_dir``; a no-op when everything exists."""
    from certwright.ca.store import CAStore

    clock = clock or SystemClock()
    paths = CAPaths(Path(ca_dir))
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths.root, 0o700)
    os.chmod(paths.private, 0o700)
    if not paths.config.exists():
        _create(paths.config, (json.dumps({**DEFAULT_CONFIG, "name": name},
                                          indent=2) + "\n").encode(), 0o644)
    root_key = _key(paths.root_key)
    root_name = _name(f"{name} Root")
    if not paths.root_cert.exists():
        root = _ca_cert(root_key, root_name, root_key, root_name, clock=clock, years=20,
                        path_len=None, hash_alg=hashes.SHA384())
        _create(paths.root_cert, root.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("ca_root_created", subject=root_name.rfc4514_string())
    inter_key = _key(paths.intermediate_key)
    if not paths.intermediate_cert.exists():
        root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
        inter = _ca_cert(inter_key, _name(f"{name} Intermediate"), root_key, root.subject,
                         clock=clock, years=8, path_len=0, hash_alg=hashes.SHA384())
        _create(paths.intermediate_cert, inter.public_bytes(serialization.Encoding.PEM),
                0o644)
        log.info("ca_intermediate_created")
    CAStore(paths.db, clock=clock).close()


def set_setting(ca_dir: Path, key: str, value: Any) -> None:
    """Write one setting into the CA's config.json (atomically; the other keys stay);
    KeyError for a key :data:`DEFAULT_CONFIG` does not know."""
    if key not in DEFAULT_CONFIG:
        raise KeyError(f"unknown CA setting {key!r}; known: {', '.join(sorted(DEFAULT_CONFIG))}")
    path = CAPaths(Path(ca_dir)).config
    data = json.loads(path.read_text())
    data[key] = value
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), 0o644)


def load_config(ca_dir: Path) -> dict[str, Any]:
    """The CA's config (defaults filled in); raises FileNotFoundError before init_ca."""
    data = json.loads(CAPaths(Path(ca_dir)).config.read_text())
    return {**DEFAULT_CONFIG, **data}
