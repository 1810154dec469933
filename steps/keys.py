"""Key and CSR steps: ``key.generate`` and ``csr.generate``.

Both are idempotent. ``key.generate`` never overwrites a key: it reuses a file that already
holds a key of the requested kind and refuses one that does not. ``csr.generate`` reuses a
CSR that already carries the same names and public key, and otherwise (re)writes it; a CSR
is derived data, so replacing a stale one is safe.

Hazards: a private key must never reach a log, an output or a world-readable file. The key
is written by :func:`certwright.atomic.write_new`: a temp file created 0600 with
``O_CREAT|O_EXCL|O_NOFOLLOW`` next to the target, fsynced, then published with ``link()``,
which fails if the target exists. So the target name is created exclusively, and a crash
never leaves a half-written key under it (only a temp file, which the next attempt with the
same idempotency key removes).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certwright.atomic import write_atomic, write_new
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError, StepError
from certwright.steps._kept import keep, restore
from certwright.steps.keys_compromised import refuse_compromised, refuse_or_set_aside

CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}
RSA_MIN_BITS, RSA_MAX_BITS, RSA_DEFAULT_BITS = 2048, 4096, 3072

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# -- small file helpers -------------------------------------------------------------------

def _resolve(ctx: StepContext, value: Any, default: str) -> Path:
    """A path parameter; relative paths are taken relative to the run folder."""
    path = Path(str(value)) if value else Path(default)
    return path if path.is_absolute() else Path(ctx.run_dir) / path


def _ensure_private_dir(folder: Path) -> None:
    """Create ``folder`` 0700 if missing; refuse a symlink or a group/world-writable one.

    An existing folder keeps its mode (``/etc/ssl/private`` is often 0710): the key file
    itself is 0600, so only writability of the folder matters (someone could swap the file).
    """
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        try:
            folder.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PermanentError(f"cannot create key folder {folder}: {exc.strerror}") from exc
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
        st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        raise PermanentError(f"key folder {folder} is a symlink; give the real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise PermanentError(f"key folder {folder} exists but is not a folder")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermanentError(
            f"key folder {folder} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it or choose another path")


def _tmp_tag(key: str) -> str:
    """The temporary file's suffix for a write under idempotency key ``key``: a leftover of
    a crashed attempt with the same key is removed by the next one."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".tmp"


def public_key_sha256(key: PrivateKey | Any) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo of a private or public key."""
    pub: Any = key.public_key() if hasattr(key, "public_key") else key
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_private_key(path: Path) -> PrivateKey:
    """Load an unencrypted PEM EC or RSA private key; PermanentError saying why not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PermanentError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise PermanentError(f"cannot read key file {path}: {exc.strerror}") from exc
    return parse_private_key(data, str(path))


def parse_private_key(data: bytes, where: str) -> PrivateKey:
    """Parse PEM ``data`` read from ``where`` as an unencrypted EC or RSA private key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PermanentError(f"key file {where} is encrypted; certwright needs an "
                             "unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PermanentError(f"{where} does not hold a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PermanentError(f"key file {where} holds a {type(key).__name__}; "
                             "only EC (P-256, P-384) and RSA keys are supported")
    return key


def _describe(key: PrivateKey) -> tuple[str, str | int]:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa", key.key_size
    return "ec", _CURVE_NAMES.get(key.curve.name, key.curve.name)


# -- key.generate --------------------------------------------------------------------------

class KeyGenerate(BaseStep):
    """Generate a private key (EC P-256 by default) into a 0600 PEM PKCS#8 file.

    Raises PermanentError for a refused size or curve, an unsafe folder, a symlinked target,
    or an existing file that is not a key of the requested kind (it is never overwritten).
    Repeat calls reuse the existing key (``reused: true``); after a crash the key file either
    holds a complete key or does not exist.
    """

    name: ClassVar[str] = "key.generate"
    description: ClassVar[str] = "Generate a private key (EC or RSA) into a 0600 file"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "type": {"enum": ["ec", "rsa"], "default": "ec"},
            "curve": {"enum": sorted(CURVES), "default": "P-256"},
            "bits": {"type": "integer", "minimum": RSA_MIN_BITS, "maximum": RSA_MAX_BITS,
                     "default": RSA_DEFAULT_BITS},
            "path": {"type": "string"},
        },
    }

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        kind = str(p.get("type") or "ec")
        want: str | int
        if kind == "ec":
            want = str(p.get("curve") or "P-256")
            if want not in CURVES:
                raise PermanentError(f"key.generate: curve {want!r} is not supported "
                                     f"(choose {', '.join(sorted(CURVES))})")
        elif kind == "rsa":
            bits = p.get("bits", RSA_DEFAULT_BITS)
            if isinstance(bits, bool) or not isinstance(bits, int) or not (
                    RSA_MIN_BITS <= bits <= RSA_MAX_BITS):
                raise PermanentError(
                    f"key.generate: RSA key size {bits!r} refused: the rule is "
                    f"{RSA_MIN_BITS} to {RSA_MAX_BITS} bits (CAs refuse RSA keys under "
                    f"{RSA_MIN_BITS} bits)")
            want = bits
        else:
            raise PermanentError(f"key.generate: key type {kind!r} is not supported (ec, rsa)")
        path = _resolve(ctx, p.get("path"), "server.key")
        log = ctx.log.bind(step="key.generate", path=str(path), type=kind, size=want)
        _ensure_private_dir(path.parent)

        existing = self._existing(path, kind, want)
        aside = None
        if existing is not None:
            aside = refuse_or_set_aside(ctx.state_dir, public_key_sha256(existing), path)
        if existing is not None and aside is None:
            log.info("key_reused", public_key_sha256=public_key_sha256(existing))
            return Done(self._outputs(path, existing, reused=True), kept=keep(ctx, path, "key"))
        if aside is not None:  # revoked for keyCompromise: kept aside, never used again
            log.warning("key_compromised_set_aside", set_aside=str(aside))

        key: PrivateKey
        if kind == "ec":
            key = ec.generate_private_key(CURVES[str(want)]())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(want))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            # fails with FileExistsError if someone created it meanwhile
            write_new(path, pem, 0o600, tag=_tmp_tag(ctx.idempotency_key))
        except FileExistsError:
            existing = self._existing(path, kind, want)
            if existing is None:  # pragma: no cover - raced by a file that vanished again
                raise StepError(f"key.generate: {path} appeared and vanished while writing; "
                                "try again") from None
            log.info("key_reused", public_key_sha256=public_key_sha256(existing))
            return Done(self._outputs(path, existing, reused=True), kept=keep(ctx, path, "key"))
        except OSError as exc:
            raise PermanentError(f"key.generate: cannot write key file {path}: "
                                 f"{exc.strerror}") from exc
        log.info("key_generated", public_key_sha256=public_key_sha256(key))
        return Done({**self._outputs(path, key, reused=False),
                     **({"set_aside": str(aside)} if aside else {})},
                    kept=keep(ctx, path, "key", pem))

    @staticmethod
    def _existing(path: Path, kind: str, want: str | int) -> PrivateKey | None:
        """The key already at ``path`` if it matches; None if there is none; else raises."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise PermanentError(f"key.generate: {path} is a symlink; refusing to use it")
        if not stat.S_ISREG(st.st_mode):
            raise PermanentError(f"key.generate: {path} exists and is not a regular file")
        if st.st_mode & 0o077:
            raise PermanentError(
                f"key.generate: existing key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it or remove it")
        key = load_private_key(path)
        have = _describe(key)
        if have != (kind, want):
            raise PermanentError(
                f"key.generate: {path} already holds a {have[0].upper()} {have[1]} key, not "
                f"the requested {kind.upper()} {want}; remove it or choose another path")
        return key

    @staticmethod
    def _outputs(path: Path, key: PrivateKey, *, reused: bool) -> dict[str, Any]:
        kind, size = _describe(key)
        return {"path": str(path), "type": kind, "bits_or_curve": size,
                "public_key_sha256": public_key_sha256(key), "reused": reused}


# -- csr.generate --------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_dns_name(raw: Any) -> str:
    """Return ``raw`` as a lower-case DNS name, or raise PermanentError naming the rule.

    Rules: ASCII letters, digits and hyphens (LDH; IDNs as ``xn--`` A-labels); labels of 1
    to 63 characters not starting or ending with a hyphen; at least two labels; at most 253
    characters; a wildcard only as the whole leftmost label with two labels below it; the
    last label not all digits (an IP address is not a DNS name).
    """
    if not isinstance(raw, str) or not raw:
        raise PermanentError(f"csr.generate: domain {raw!r} is not a non-empty string")
    name = raw.strip().lower().removesuffix(".")
    if len(name) > 253:
        raise PermanentError(f"csr.generate: domain {raw!r} is longer than 253 characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise PermanentError(f"csr.generate: domain {raw!r} needs at least two labels")
    for i, label in enumerate(labels):
        if label == "*" and i == 0:
            if len(labels) < 3:
                raise PermanentError(f"csr.generate: wildcard {raw!r} needs at least two "
                                     "labels after '*.'")
            continue
        if "*" in label:
            raise PermanentError(f"csr.generate: domain {raw!r}: a wildcard is allowed only "
                                 "as the whole leftmost label ('*.example.org')")
        if not _LABEL.match(label):
            raise PermanentError(
                f"csr.generate: domain {raw!r}: label {label!r} is not 1-63 letters, digits "
                "or hyphens (not starting or ending with a hyphen)")
    if labels[-1].isdigit():
        raise PermanentError(f"csr.generate: {raw!r} looks like an IP address, not a DNS name")
    return name


def _names_param(p: Mapping[str, Any]) -> list[str]:
    raw = p.get("domains")
    if raw is None:
        raw = [p["domain"]] if p.get("domain") else []
    elif p.get("domain"):
        raise PermanentError("csr.generate: give either 'domains' or 'domain', not both")
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise PermanentError("csr.generate: no domain given ('domains' or 'domain')")
    names: list[str] = []
    for item in raw:
        name = validate_dns_name(item)
        if name in names:
            raise PermanentError(f"csr.generate: domain {name!r} is listed twice")
        names.append(name)
    return names


def csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The DNS names of a CSR's subjectAltName extension (empty if it has none)."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in ext.value.get_values_for_type(x509.DNSName)]


class CsrGenerate(BaseStep):
    """Write a PEM CSR (SHA-256, CN = first name, SAN = all names) for an existing key.

    Raises PermanentError for a bad name, a missing/unusable key or a symlinked target.
    Repeat calls reuse an existing CSR with the same names, key and a valid signature
    (``reused: true``); otherwise the file is replaced atomically (temp file + rename), so
    a crash leaves either the old or the new CSR.
    """

    name: ClassVar[str] = "csr.generate"
    description: ClassVar[str] = "Write a certificate signing request for a key and names"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "domains": {"type": ["array", "string"], "items": {"type": "string"}},
            "domain": {"type": "string"},
            "path": {"type": "string"},
            "csr": {"type": "string"},
        },
    }

    def render_params(self, params: Mapping[str, Any],
                      namespace: Mapping[str, Any]) -> dict[str, Any]:
        """As the engine renders them, but with a given ``csr`` the ``key`` is not
        rendered (no key was made: ``key.generate`` was skipped)."""
        from certwright.engine.model.template import render
        csr = render(params.get("csr", ""), namespace)
        if csr:
            return {"csr": str(csr)}
        rendered: dict[str, Any] = render(dict(params), namespace)
        rendered.pop("csr", None)
        return rendered

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        if p.get("csr"):  # a CSR that came with the run: signed as it is
            from certwright.steps.given_csr import check_given_csr
            given = check_given_csr(Path(str(p["csr"])))
            refuse_compromised(ctx.state_dir, given["public_key_sha256"], f"the CSR {p['csr']}")
            return Done(given)
        names = _names_param(p)
        key_path = restore(ctx, _resolve(ctx, p.get("key"), "server.key"), "key")
        path = _resolve(ctx, p.get("path"), "server.csr")
        log = ctx.log.bind(step="csr.generate", path=str(path), domains=names)
        key = load_private_key(key_path)
        refuse_compromised(ctx.state_dir, public_key_sha256(key), str(key_path))
        existing = self._existing(path, names, key)
        if existing:
            log.info("csr_reused")
            return Done({"path": str(path), "domains": names, "reused": True},
                        kept=keep(ctx, path, "csr"))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]
                            if len(names[0]) <= 64 else [])  # CN is at most 64 characters
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # a CSR may go into any folder the user names (a symlinked one included)
            write_atomic(path, pem := csr.public_bytes(serialization.Encoding.PEM), 0o644,
                         tag=_tmp_tag(ctx.idempotency_key), follow_folder=True)
        except OSError as exc:
            raise PermanentError(f"csr.generate: cannot write {path}: {exc.strerror}") from exc
        log.info("csr_generated", key=str(key_path))
        return Done({"path": str(path), "domains": names, "reused": False},
                    kept=keep(ctx, path, "csr", pem))

    @staticmethod
    def _existing(path: Path, names: list[str], key: PrivateKey) -> bool:
        """True if ``path`` holds a valid CSR for exactly these names and key."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise PermanentError(f"csr.generate: {path} is a symlink; refusing to write there")
        try:
            csr = x509.load_pem_x509_csr(path.read_bytes())
        except (ValueError, OSError):
            return False  # unreadable or not a CSR: it is rewritten
        try:
            valid = csr.is_signature_valid
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            valid = False
        return (valid and csr_names(csr) == names
                and public_key_sha256(csr.public_key()) == public_key_sha256(key))
