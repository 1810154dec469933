"""The parts of ``certwright revoke`` beside the command: the built-in CA (served or
embedded), compromised keys. Private to
:mod:`certwright.engine.cli.revoke`.

Hazards: the embedded CA is started here in this process on the ports it recorded (as a
resumed run does) and stopped with the caller's ``ExitStack``; when those ports are taken
by something else, :func:`certwright.ca.embedded.start` says so. The daemon's schedule
needs no write of its own: it reads the inventory, where a revoked record has no renewal
instant (:func:`certwright.steps.inventory.renewal_instant`).
"""
from __future__ import annotations

import hashlib
import json
import socket
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certwright.errors import CertwrightError, StoreError
from certwright.state.artefacts import SHARED, Artefact
from certwright.state.base import Store
from certwright.state.records import CertificateRecord


def installed_cert(rec: CertificateRecord) -> x509.Certificate | None:
    """The installed certificate file, if it still holds the recorded certificate."""
    try:
        cert = x509.load_pem_x509_certificates(Path(rec.paths["cert"]).read_bytes())[0]
    except (KeyError, OSError, ValueError, IndexError):
        return None
    der = cert.public_bytes(serialization.Encoding.DER)
    if rec.fingerprint_sha256 and hashlib.sha256(der).hexdigest() != rec.fingerprint_sha256:
        return None
    return cert


def kept_cert(store: Store, rec: CertificateRecord) -> x509.Certificate | None:
    """The recorded certificate from the store's copy of the run's files (``certificate``
    made on another host: its file is not here); None when the store holds none."""
    try:
        kept = [a for a in store.artefacts(rec.run_id) if a.kind == "cert"]
    except StoreError:
        return None  # sealed, and this command has no store key: as if not kept
    for art in sorted(kept, key=lambda a: a.created, reverse=True):
        try:
            cert = x509.load_pem_x509_certificates(art.data)[0]
        except (ValueError, IndexError):
            continue
        der = cert.public_bytes(serialization.Encoding.DER)
        if not rec.fingerprint_sha256 or \
                hashlib.sha256(der).hexdigest() == rec.fingerprint_sha256:
            return cert
    return None


def shared_artefact(store: Store, name: str) -> Artefact | None:
    """A CA or ACME account's credentials kept in the store (``state.artefacts.SHARED``);
    None when it keeps none, or they are sealed and this command has no store key (this
    host's own file is then used, as without a store)."""
    try:
        found = store.artefacts(SHARED, name)
    except StoreError:
        return None
    return found[0] if found else None


def _embedded_intermediate(state_dir: Path) -> x509.Certificate | None:
    from certwright.ca.embedded_paths import FOLDER
    from certwright.ca.setup import CAPaths
    try:
        pem = CAPaths(Path(state_dir) / FOLDER / "ca").intermediate_cert.read_bytes()
        return x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError):
        return None


def is_embedded(state_dir: Path, rec: CertificateRecord, cert: x509.Certificate | None) -> bool:
    """Whether ``rec`` was issued by this state dir's embedded CA: its certificate verifies
    against that CA's intermediate (without the file: the recorded issuer URL is the one
    the embedded CA last had)."""
    inter = _embedded_intermediate(state_dir)
    if inter is None:
        return False
    if cert is not None:
        try:
            cert.verify_directly_issued_by(inter)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
    from certwright.ca.embedded import recorded
    emb = recorded(state_dir)
    return emb is not None and rec.issuer.rstrip("/") == emb.ca_url.rstrip("/")


def _serves(url: str, inter: x509.Certificate | None) -> bool:
    """Whether the CA at ``url`` answers with ``inter`` as its intermediate (so that the
    account's passphrase goes to our embedded CA, never to whatever took its port)."""
    if inter is None:
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=1):
            pass
        served = httpx.get(f"{url.rstrip('/')}/ca/intermediate.crt", timeout=5).content
    except (OSError, httpx.HTTPError):
        return False
    return served == inter.public_bytes(serialization.Encoding.DER)


def embedded_url(state_dir: Path, stack: ExitStack) -> str:
    """The embedded CA's URL: where it is served already (``daemon --embedded``, a run in
    the foreground), else started now until ``stack`` closes."""
    from certwright.ca import embedded
    emb = embedded.recorded(state_dir)
    if emb is not None and _serves(emb.ca_url, _embedded_intermediate(state_dir)):
        return emb.ca_url
    return embedded.start(state_dir, [], stack).ca_url


def _credentials(state_dir: Path, rec: CertificateRecord,
                 store: Store | None = None) -> dict[str, Any]:
    """The run's CA account: the store's copy when it holds one (every host's), else
    this host's file."""
    from certwright.steps._ca_session import account_name
    from certwright.steps.ca import credentials_path
    ca = str(rec.inputs.get("ca") or rec.issuer)
    email = str(rec.inputs.get("email") or "")
    path = credentials_path(state_dir, ca, email)
    art = shared_artefact(store, account_name(path)) if store is not None else None
    if art is not None:
        return dict(json.loads(art.data))
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CertwrightError(
            f"no CA account for {email} at {ca} in {path.parent} (expected {path.name}): "
            f"only the account that asked for {rec.name} may revoke it; restore that file "
            "or ask the CA's operator") from None
    except (OSError, ValueError) as exc:
        raise CertwrightError(f"cannot read the CA account in {path}: {exc}") from exc


def revoke_builtin(state_dir: Path, rec: CertificateRecord, cert: x509.Certificate | None,
                   reason: str, stack: ExitStack, store: Store | None = None) -> dict[str, Any]:
    """Revoke at the built-in CA with the run's account (the store's copy first); the
    CA's answer (revoked_at, reason, already). CertwrightError saying what went wrong and
    where."""
    from certwright.ca.client import CAClient, CAError
    creds = _credentials(state_dir, rec, store)
    url = str(rec.inputs.get("ca") or rec.issuer)
    if is_embedded(state_dir, rec, cert):
        url = embedded_url(state_dir, stack)
        print(f"{rec.name} is a certificate of the embedded CA of {state_dir}; asking it on "
              f"{url}")
    with CAClient(url, timeout=15.0) as client:
        try:
            client.login(str(creds["email"]), str(creds["passphrase"]))
            return client.revoke(rec.serial, reason)
        except CAError as exc:
            if exc.status is None:
                raise CertwrightError(f"the CA at {url} cannot be reached ({exc}); nothing "
                                      "was revoked: try again when it answers") from exc
            if exc.status == 404:
                raise CertwrightError(f"the CA at {url} has no certificate {rec.serial} on "
                                      f"the account {creds['email']}: {exc}") from exc
            raise CertwrightError(f"the CA at {url} did not revoke {rec.serial}: "
                                  f"{exc}") from exc


def mark_key_compromised(state_dir: Path, store: Store, rec: CertificateRecord) -> list[Path]:
    """Record the certificate's key as compromised and put a note beside each file that
    holds it (the installed key, the run folder's); returns the notes."""
    from certwright.steps.keys import load_private_key, public_key_sha256
    from certwright.steps.keys_compromised import mark_compromised
    files = [Path(rec.paths["key"])] if rec.paths.get("key") else []
    run = store.find_run(rec.run_id)
    made = run.vars.get("key_generate") if run is not None else None
    if isinstance(made, dict) and made.get("path"):
        files.append(Path(str(made["path"])))
    cert = installed_cert(rec)
    if cert is not None:
        digest = public_key_sha256(cert.public_key())
    elif files and files[0].exists():
        digest = public_key_sha256(load_private_key(files[0]))
    else:
        raise CertwrightError(f"neither the certificate nor the key of {rec.name} is left "
                              "to tell which key to mark compromised")
    return mark_compromised(state_dir, digest, name=rec.name, serial=rec.serial,
                            revoked_at=rec.revoked_at or "", key_paths=files)
