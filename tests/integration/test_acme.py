"""The ACME steps against a real Pebble on loopback (real http-01 and dns-01 validation)."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.clock import SystemClock
from certwright.engine.plugins.step import StepContext
from certwright.errors import PermanentError, StepError
from certwright.steps import acme
from certwright.steps.acme import responder as acme_responder
from certwright.steps.acme.client import forget_sessions
from tests.support.dns import TestDNS, read_records
from tests.support.pebble import Pebble, find_pebble, free_port

pytestmark = pytest.mark.slow


def _need_pebble() -> None:
    if find_pebble() is None:
        if os.environ.get("CI"):
            pytest.fail("pebble is not installed (Debian package 'pebble') and CI is set")
        pytest.skip("pebble is not installed (Debian package 'pebble')")


@dataclass
class Env:
    """Pebble + test DNS + helpers to build step contexts."""

    tmp: Path
    pebble: Pebble
    dns: TestDNS
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = self.tmp / "run"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.pebble.http_port}"

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"directory": self.pebble.directory, "ca_bundle": str(self.pebble.ca_bundle),
                "contact": "admin@acme.test", **extra}

    def ctx(self, step: str, recovering: bool = False, run_dir: Path | None = None,
            **params: Any) -> StepContext:
        return StepContext(run_id="r1", pipeline="t", state="s", step_id=step.replace(".", "_"),
                           idempotency_key="r1:1:0", attempt=1, params=self.params(**params),
                           run_dir=run_dir or self.run_dir, state_dir=self.tmp, clock=SystemClock(),
                           recovering=recovering)

    def run(self, step: Any, **params: Any) -> dict[str, Any]:
        return dict(step.run(self.ctx(step.name, **params)).outputs)


def _start(tmp_path: Path, nonce_reject: int = 0, **pebble_args: Any) -> Iterator[Env]:
    _need_pebble()
    dns = TestDNS(tmp_path / "records.json").start()
    pebble = Pebble(tmp_path / "pebble", dns_server=dns.address, nonce_reject=nonce_reject,
                    **pebble_args)
    try:
        pebble.start()
        yield Env(tmp_path, pebble, dns)
    finally:
        pebble.stop()
        dns.stop()
        forget_sessions()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def make_csr(folder: Path, domains: list[str]) -> Path:
    """A CSR for ``domains`` with a fresh P-256 key (what csr.generate will make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "csr.pem"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def verify_chain(env: Env, out: dict[str, Any], domains: list[str]) -> None:
    """openssl verify the leaf against Pebble's issuing root with chain.pem untrusted."""
    root = env.tmp / "pebble-root.pem"
    root.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                              for c in env.pebble.issuing_roots()))
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    proc = subprocess.run([openssl, "verify", "-CAfile", str(root), "-untrusted",
                           out["chain_path"], out["cert_path"]], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leaf = x509.load_pem_x509_certificate(Path(out["cert_path"]).read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(domains)
    assert out["serial"] == format(leaf.serial_number, "x")
    assert out["fingerprint_sha256"] == leaf.fingerprint(hashes.SHA256()).hex()


def issue(env: Env, domains: list[str], **challenge: Any) -> dict[str, Any]:
    env.run(acme.Account())
    order = env.run(acme.Order(), domains=domains)
    assert order["status"] == "pending" and len(order["authorizations"]) == len(domains)
    env.run(acme.Challenge(), **challenge)
    csr = make_csr(env.tmp / "csr", domains)
    assert env.run(acme.Finalize(), csr=str(csr))["status"] == "valid"
    return env.run(acme.Download())


def test_http01_issues_a_certificate_that_chains_to_pebbles_root(env: Env) -> None:
    """A certificate issued over real http-01 verifies against Pebble's issuing root."""
    domains = ["www.acme.test", "api.acme.test"]
    out = issue(env, domains, type="http-01", http_address=env.http_address)
    verify_chain(env, out, domains)
    assert acme_responder.find(env.http_address) is None  # responder stopped after the step
    assert not (env.run_dir / "acme-challenges.json").exists()


def test_http01_from_a_webroot_served_by_another_server(env: Env) -> None:
    """webroot mode writes the answer files that a separate web server serves (on-disk map)."""
    webroot = env.tmp / "www"
    server = acme_responder.Responder("127.0.0.1", env.pebble.http_port,
                                      folder=webroot / ".well-known" / "acme-challenge").start()
    try:
        out = issue(env, ["web.acme.test"], type="http-01", webroot=str(webroot))
    finally:
        server.stop()
    verify_chain(env, out, ["web.acme.test"])
    assert len(server.served) >= 1
    assert list((webroot / ".well-known" / "acme-challenge").iterdir()) == []


def test_dns01_issues_a_certificate_via_hooks(env: Env) -> None:
    """dns-01 with add/cleanup hooks, a propagation check, and a verified chain."""
    domains = ["dns.acme.test", "*.dns.acme.test"]
    out = issue(env, domains, type="dns-01", dns_hook=env.dns.hook_argv("add"),
                dns_cleanup_hook=env.dns.hook_argv("del"), dns_resolver=env.dns.address,
                propagation_wait=10)
    verify_chain(env, out, domains)
    queried = {(n, t) for n, t in env.dns.resolver.queries}
    assert ("_acme-challenge.dns.acme.test.", "TXT") in queried
    assert read_records(env.dns.records) == {"_acme-challenge.dns.acme.test.": []}  # cleaned up


def test_account_is_reused_and_stored_0600(env: Env) -> None:
    """The second acme.account call reuses the stored account; the key file is 0600."""
    first = env.run(acme.Account())
    second = env.run(acme.Account())
    assert first["reused"] is False and second["reused"] is True
    assert first["account_url"] == second["account_url"]
    keys = list((env.tmp / "acme" / "accounts").glob("*/account.key"))
    assert len(keys) == 1 and keys[0].stat().st_mode & 0o777 == 0o600


def test_interrupted_run_resumes_the_same_order(env: Env) -> None:
    """After a crash between challenge and finalize, acme.order (recovering) reuses the order."""
    domains = ["resume.acme.test"]
    env.run(acme.Account())
    first = env.run(acme.Order(), domains=domains)
    env.run(acme.Challenge(), type="http-01", http_address=env.http_address)
    forget_sessions()  # the crash: every in-memory client and object is gone
    again = acme.Order().run(env.ctx("acme.order", recovering=True, domains=domains)).outputs
    assert again["order_url"] == first["order_url"] and again["reused"] is True
    assert again["status"] == "ready"
    csr = make_csr(env.tmp / "csr", domains)
    assert env.run(acme.Finalize(), csr=str(csr))["status"] == "valid"
    assert env.run(acme.Finalize(), csr=str(csr))["status"] == "valid"  # repeat: only polls
    verify_chain(env, env.run(acme.Download()), domains)
    session = acme.open_session(env.ctx("acme.order", domains=domains))
    assert acme.list_orders(session) == [first["order_url"]]  # a single order at Pebble


def test_recovering_without_saved_order_adopts_the_cas_order(env: Env) -> None:
    """A crash after newOrder but before the URL was saved: the account's open order is adopted."""
    env.run(acme.Account())
    first = env.run(acme.Order(), domains=["lost.acme.test"])
    (env.run_dir / "acme-order.json").unlink()
    again = acme.Order().run(env.ctx("acme.order", recovering=True,
                                     domains=["lost.acme.test"])).outputs
    assert again["order_url"] == first["order_url"]


def test_http01_wrong_key_authorization_is_permanent_with_the_cas_problem(env: Env) -> None:
    """A responder serving a wrong key authorization fails with Pebble's detail and identifier."""
    class Liar(acme_responder.Responder):
        def lookup(self, token: str) -> str | None:
            return "not-the-key-authorization"

    liar = Liar("127.0.0.1", env.pebble.http_port).start()
    try:
        env.run(acme.Account())
        env.run(acme.Order(), domains=["liar.acme.test"])
        with pytest.raises(PermanentError) as info:
            # Our own responder listens elsewhere; Pebble asks the liar.
            env.run(acme.Challenge(), type="http-01", http_address=f"127.0.0.1:{free_port()}")
    finally:
        liar.stop()
    text = str(info.value)
    assert "liar.acme.test" in text and "unauthorized" in text
    assert "detail=" in text and "key authorization" in text.lower()


def test_dns01_missing_txt_is_permanent_with_the_cas_problem(env: Env) -> None:
    """A hook that adds nothing makes Pebble report the missing TXT record for the identifier."""
    true = shutil.which("true") or "true"
    env.run(acme.Account())
    env.run(acme.Order(), domains=["notxt.acme.test"])
    with pytest.raises(PermanentError) as info:
        env.run(acme.Challenge(), type="dns-01", dns_hook=[true, "{name}", "{value}"],
                propagation_wait=0)
    text = str(info.value)
    assert "notxt.acme.test" in text and "detail=" in text
    assert "urn:ietf:params:acme:error:" in text


def test_dns01_record_that_never_shows_at_the_resolver_is_retryable(env: Env) -> None:
    """The propagation check asks the given resolver and gives up after propagation_wait,
    naming the record, before the CA is asked to validate (a retry may find it)."""
    true = shutil.which("true") or "true"
    env.run(acme.Account())
    order = env.run(acme.Order(), domains=["noprop.acme.test"])
    with pytest.raises(StepError) as info:
        env.run(acme.Challenge(), type="dns-01", dns_hook=[true, "{name}", "{value}"],
                dns_resolver=env.dns.address, propagation_wait=2)
    assert not isinstance(info.value, PermanentError)
    text = str(info.value)
    assert "_acme-challenge.noprop.acme.test" in text and "not visible" in text
    assert env.dns.address in text and "after 2s" in text
    asked = [q for q in env.dns.resolver.queries if q[0] == "_acme-challenge.noprop.acme.test."]
    assert len(asked) >= 2  # checked more than once within the wait
    session = acme.open_session(env.ctx("acme.order", domains=["noprop.acme.test"]))
    authz_url = order["authorizations"][0]
    authz, _ = session.authorization(authz_url)
    assert authz.status.name == "pending"  # the CA was never asked to validate


def test_http_directory_is_refused_unless_allowed(env: Env, tmp_path: Path) -> None:
    """An http:// directory is a PermanentError; with allow_insecure the step tries to reach it."""
    params = {"directory": "http://127.0.0.1:9/dir"}
    with pytest.raises(PermanentError, match="http://"):
        acme.Account().run(env.ctx("acme.account", **params))
    # allowed: now it is a network error, not a refusal
    with pytest.raises(Exception) as info:  # noqa: PT011 - any error but PermanentError
        acme.Account().run(env.ctx("acme.account", allow_insecure=True, **params))
    assert not isinstance(info.value, PermanentError)
    assert "127.0.0.1:9" in str(info.value)


@pytest.fixture
def nonce_env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path, nonce_reject=50)


def test_issuance_survives_half_the_nonces_rejected(nonce_env: Env) -> None:
    """With PEBBLE_WFE_NONCEREJECT=50 every step still succeeds (badNonce retried)."""
    env = nonce_env
    out = issue(env, ["nonce.acme.test"], type="http-01", http_address=env.http_address)
    verify_chain(env, out, ["nonce.acme.test"])
    session = acme.open_session(env.ctx("acme.order"))
    assert session.net.bad_nonces > 0
