"""The ca.* steps driven directly with a StepContext against a live CAServer."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certwright.ca.client import CAClient, CAError
from certwright.ca.server import CAServer
from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.ca import Activate, AddDomain, Join, Probe, Sign, Verify, credentials_path
from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    ca_server,
    fake_clock,
    make_csr,
    smtp_sink,
)

EMAIL = "qzyx@mailhost.test"
DOMAIN = "example.test"


def ctx(tmp_path: Path, params: dict[str, Any], key: str = "r1:1:0",
        recovering: bool = False) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x", idempotency_key=key,
                       attempt=1, params=params, run_dir=tmp_path / "run", state_dir=tmp_path,
                       clock=SystemClock(), recovering=recovering)


def done(result: Any) -> dict[str, Any]:
    assert isinstance(result, Done)
    return dict(result.outputs)


def test_steps_end_to_end(tmp_path: Path, ca_server: CAServer, smtp_sink: SmtpSink) -> None:
    """join -> activate -> join reuses -> add_domain -> probe -> verify -> sign, with
    repeats of each step safe and a recovering sign not issuing twice."""
    ca = ca_server.url
    account = {"ca": ca, "email": EMAIL, "name": "Quentin Zyxwar"}
    joined = done(Join().run(ctx(tmp_path, account)))
    assert joined["reused"] is False and joined["status"] == "pending"
    creds = credentials_path(tmp_path, ca, EMAIL)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    again = done(Join().run(ctx(tmp_path, account)))  # still pending: same account
    assert again["account_id"] == joined["account_id"] and again["reused"] is False

    link = smtp_sink.last_to(EMAIL).link()
    assert done(Activate().run(ctx(tmp_path, {"ca": ca, "link": link})))["status"] == "verified"
    assert done(Activate().run(ctx(tmp_path, {"ca": ca, "link": link})))["status"] \
        == "already_verified"
    reused = done(Join().run(ctx(tmp_path, account)))
    assert reused == {"account_id": joined["account_id"], "email": EMAIL, "reused": True,
                      "status": "active"}
    assert done(Activate().run(ctx(tmp_path, {"ca": ca, "link": "", "email": EMAIL}))) \
        ["skipped"] is True

    who = {"ca": ca, "email": EMAIL, "domain": DOMAIN}
    assert done(AddDomain().run(ctx(tmp_path, who))) == {"domain": DOMAIN, "verified": False}
    probe = done(Probe().run(ctx(tmp_path, {**who, "local_part": "postmaster"}, "r1:2:1")))
    assert probe["skipped"] is False and probe["address"] == f"postmaster@{DOMAIN}"
    repeat = done(Probe().run(ctx(tmp_path, {**who, "local_part": "postmaster"}, "r1:2:1")))
    assert repeat["probe_id"] == probe["probe_id"]
    assert len(smtp_sink.to(f"postmaster@{DOMAIN}")) == 1

    plink = smtp_sink.last_to(f"postmaster@{DOMAIN}").link()
    other = plink.replace(f":{ca_server.port}/", ":1/")
    with pytest.raises(PermanentError, match="refusing to follow link to other host"):
        Verify().run(ctx(tmp_path, {"ca": ca, "link": other}))
    with pytest.raises(PermanentError, match="expected a domain link"):
        Verify().run(ctx(tmp_path, {"ca": ca, "link": link}))
    assert done(Verify().run(ctx(tmp_path, {"ca": ca, "link": plink}))) \
        == {"domain": DOMAIN, "status": "verified"}
    assert done(Verify().run(ctx(tmp_path, {"ca": ca, "link": plink})))["status"] \
        == "already_verified"
    assert done(AddDomain().run(ctx(tmp_path, who)))["verified"] is True
    assert done(Probe().run(ctx(tmp_path, {**who, "local_part": "postmaster"}, "r1:3:0"))) \
        == {"skipped": True, "domain": DOMAIN}

    csr = tmp_path / "req.csr"
    csr.write_text(make_csr([DOMAIN])[0])
    params = {"ca": ca, "email": EMAIL, "csr": str(csr)}
    signed = done(Sign().run(ctx(tmp_path, params, "r1:4:0")))
    cert = x509.load_pem_x509_certificate(Path(signed["cert_path"]).read_bytes())
    assert format(cert.serial_number, "x") == signed["serial"]
    chain = x509.load_pem_x509_certificates(Path(signed["chain_path"]).read_bytes())
    root = x509.load_pem_x509_certificates(Path(signed["root_path"]).read_bytes())
    assert [c.issuer for c in chain] == [r.subject for r in root]  # intermediate, then its root
    assert root[0].subject == root[0].issuer and len(chain) == 1
    Path(signed["cert_path"]).unlink()
    recovered = done(Sign().run(ctx(tmp_path, params, "r1:4:0", recovering=True)))
    assert recovered == signed and Path(signed["cert_path"]).exists()
    svc = ca_server._server.config.app.state.service  # type: ignore[union-attr]
    assert svc.store.count_certificates() == 1


def test_sign_unverified_is_permanent(tmp_path: Path, ca_server: CAServer,
                                      smtp_sink: SmtpSink) -> None:
    """A refusal by the CA is a permanent step error naming the request and the reason."""
    ca = ca_server.url
    done(Join().run(ctx(tmp_path, {"ca": ca, "email": EMAIL, "name": "Quentin Zyxwar"})))
    done(Activate().run(ctx(tmp_path, {"ca": ca, "link": smtp_sink.last_to(EMAIL).link()})))
    csr = tmp_path / "req.csr"
    csr.write_text(make_csr(["example.org"])[0])
    with pytest.raises(CAError) as err:
        Sign().run(ctx(tmp_path, {"ca": ca, "email": EMAIL, "csr": str(csr)}))
    assert err.value.retryable is False and err.value.status == 422
    assert str(err.value) == (f"POST {ca}/api/v1/certificates: 422 unverified_domain: "
                              "example.org is not verified for this account")


def test_client_network_error_is_retryable() -> None:
    """A refused connection is a retryable CAError saying where it went."""
    with CAClient("http://127.0.0.1:1", timeout=2) as client, pytest.raises(CAError) as err:
        client.login(EMAIL, "x")
    assert err.value.retryable is True and "POST http://127.0.0.1:1/api/v1/login" in str(err.value)


def test_parse_link() -> None:
    """parse_link returns kind, request id and token; other URLs are refused."""
    assert CAClient.parse_link("http://h:1/domains/verify/probe_1?token=abc") \
        == ("domain", "probe_1", "abc")
    assert CAClient.parse_link("http://h:1/account/confirm/conf_2?token=t") \
        == ("account", "conf_2", "t")
    with pytest.raises(CAError):
        CAClient.parse_link("http://h:1/elsewhere/x?token=t")
