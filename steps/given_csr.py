"""A CSR that comes with the run (dropped in the daemon's inbox): signed as it is, and its
certificate placed beside it. The private key stays with the CSR's owner: certwright never
sees it, makes no key and installs none.

* ``csr.generate`` with ``csr: PATH`` checks that CSR (PEM, a valid signature, DNS names)
  and hands its path on instead of writing one (:func:`check_given_csr`).
* ``install.beside`` writes the certificate, the chain and the full chain next to the CSR
  (``req.csr`` -> ``req.crt``, ``req.chain.pem``, ``req.fullchain.pem``), each replaced
  atomically (0644: none of them is secret), after checking that the certificate is for
  the CSR's key. Repeat calls write the same bytes again; a crash leaves old or new files.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.atomic import write_many_atomic
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError

MAX_CSR = 64 * 1024


def check_given_csr(path: Path) -> dict[str, Any]:
    """The outputs of ``csr.generate`` for a given CSR: path, names, public key hash.
    Raises PermanentError saying what is wrong with it."""
    from certwright.steps.keys import csr_names, public_key_sha256
    try:
        raw = path.read_bytes()[:MAX_CSR + 1]
    except OSError as exc:
        raise PermanentError(f"csr.generate: cannot read the given CSR {path}: "
                             f"{exc.strerror}") from exc
    if len(raw) > MAX_CSR:
        raise PermanentError(f"csr.generate: the given CSR {path} is larger than {MAX_CSR} "
                             "bytes")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        raise PermanentError(f"csr.generate: {path} is not a PEM CSR: {exc}") from exc
    if not csr.is_signature_valid:
        raise PermanentError(f"csr.generate: the signature of the given CSR {path} is not "
                             "valid")
    names = csr_names(csr)
    if not names:
        raise PermanentError(f"csr.generate: the given CSR {path} names no DNS name in a "
                             "subjectAltName")
    return {"path": str(path), "domains": names, "reused": True, "given": True,
            "public_key_sha256": public_key_sha256(csr.public_key())}


def _certs(path: Any, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(Path(str(path)).read_bytes())
    except (OSError, ValueError) as exc:
        raise PermanentError(f"install.beside: cannot read the {what} {path}: {exc}") from exc
    return certs


class InstallBeside(BaseStep):
    """Place a certificate for a given CSR beside it (see the module docstring)."""

    name: ClassVar[str] = "install.beside"
    description: ClassVar[str] = "Write the certificate and chain next to the given CSR"
    host_bound: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["cert", "csr"],
        "properties": {"cert": {"type": "string", "minLength": 1},
                       "chain": {"type": "string"},
                       "csr": {"type": "string", "minLength": 1}},
    }

    def run(self, ctx: StepContext) -> Done:
        from certwright.steps._kept import restored
        from certwright.steps.keys import public_key_sha256
        p = restored(ctx, ctx.params, (("cert", "cert"), ("chain", "chain")))
        csr_path = Path(str(p["csr"]))
        given = check_given_csr(csr_path)
        certs = _certs(p["cert"], "certificate")
        if not certs:
            raise PermanentError(f"install.beside: {p['cert']} holds no certificate")
        leaf, chain = certs[0], certs[1:] + (_certs(p["chain"], "chain") if p.get("chain")
                                             else [])
        if public_key_sha256(leaf.public_key()) != given["public_key_sha256"]:
            raise PermanentError(f"install.beside: certificate {p['cert']} is not for the key "
                                 f"of the CSR {csr_path}; nothing was written")
        pem = [c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *chain]]
        stem = csr_path.with_suffix("") if csr_path.suffix == ".csr" else csr_path
        out = {"cert_path": f"{stem}.crt", "chain_path": f"{stem}.chain.pem",
               "fullchain_path": f"{stem}.fullchain.pem"}
        write_many_atomic([(Path(out["cert_path"]), pem[0], 0o644),
                           (Path(out["chain_path"]), b"".join(pem[1:]), 0o644),
                           (Path(out["fullchain_path"]), b"".join(pem), 0o644)],
                          tag=ctx.idempotency_key.replace(":", "_") + ".tmp")
        ctx.log.info("cert_placed_beside_csr", csr=str(csr_path), cert=out["cert_path"],
                     serial=f"{leaf.serial_number:x}")
        return Done({**out, "serial": f"{leaf.serial_number:x}"})
