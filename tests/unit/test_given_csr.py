"""A CSR that comes with the run: ``csr.generate`` checks it and hands it on without a
key, and ``install.beside`` places only a certificate for that CSR's key beside it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.given_csr import InstallBeside
from certwright.steps.keys import CsrGenerate


def ctx(tmp_path: Path, **params: Any) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock())


def _csr(key: ec.EllipticCurvePrivateKey, path: Path, name: str = "own.test") -> Path:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def _cert(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "own.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_given_csr_is_handed_on_and_its_key_param_never_rendered(tmp_path: Path):
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), tmp_path / "req.csr")
    step = CsrGenerate()
    params = step.render_params({"key": "${steps.key_generate.path}", "csr": "${csr}"},
                                {"inputs": {"csr": str(csr)}, "steps": {}})
    assert params == {"csr": str(csr)}
    result = step.run(ctx(tmp_path, **params))
    assert isinstance(result, Done)
    assert result.outputs["path"] == str(csr)
    assert result.outputs["domains"] == ["own.test"]
    assert not (tmp_path / "run").exists()


def test_a_broken_given_csr_is_refused_saying_why(tmp_path: Path):
    bad = tmp_path / "bad.csr"
    bad.write_text("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(PermanentError, match="is not a PEM CSR"):
        CsrGenerate().run(ctx(tmp_path, csr=str(bad)))


def test_beside_places_only_a_certificate_for_the_csrs_key(tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key, tmp_path / "req.csr")
    other = _cert(ec.generate_private_key(ec.SECP256R1()), tmp_path / "other.pem")
    with pytest.raises(PermanentError, match="is not for the key of the CSR"):
        InstallBeside().run(ctx(tmp_path, cert=str(other), csr=str(csr)))
    assert not (tmp_path / "req.crt").exists()
    good = _cert(key, tmp_path / "good.pem")
    done = InstallBeside().run(ctx(tmp_path, cert=str(good), chain=str(other), csr=str(csr)))
    assert isinstance(done, Done)
    assert done.outputs["cert_path"] == str(tmp_path / "req.crt")
    assert (tmp_path / "req.crt").read_bytes() == good.read_bytes()
    assert (tmp_path / "req.fullchain.pem").read_bytes() == good.read_bytes() + other.read_bytes()
