"""The built-in CA's ACME server refuses each JWS attack with its RFC 8555 problem type:
a missing, forged or replayed nonce (answered with a fresh one), a foreign ``url``, another
account's ``kid``, ``alg: none`` and HS256, a key change to another account's key, a
challenge answered for another account's authorization, a CSR naming a name not ordered."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.acme_client import JOSE, Client, b64, new_key, sign
from tests.support.acme_server import AcmeCA, acme_ca, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, fake_clock, make_csr, smtp_sink  # noqa: F401

URN = "urn:ietf:params:acme:error:"


@pytest.fixture
def http() -> httpx.Client:
    with httpx.Client(timeout=30) as client:
        yield client


def problem(r: httpx.Response, kind: str) -> dict[str, object]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body = r.json()
    assert body["type"] == URN + kind, body
    assert r.headers["Replay-Nonce"]
    return body


def client(http: httpx.Client, acme_ca: AcmeCA) -> Client:
    c = Client(http, acme_ca.directory)
    assert c.register().status_code == 201
    return c


def order(c: Client, *names: str) -> dict[str, object]:
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert r.status_code == 201, r.text
    return {**r.json(), "url": r.headers["Location"]}


def test_missing_nonce_is_bad_nonce(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A JWS without a nonce is badNonce, and the answer carries a fresh nonce."""
    c = client(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": []}, header={"nonce": None})
    problem(r, "badNonce")


def test_forged_and_replayed_nonces_are_bad_nonce(http: httpx.Client,
                                                  acme_ca: AcmeCA) -> None:
    """A nonce the server never issued, and one used once already, are badNonce; the
    fresh nonce of that answer works."""
    c = client(http, acme_ca)
    forged = b64(b"\0" * 24)
    r = c.post(c.kid or "", None, header={"nonce": forged})
    problem(r, "badNonce")
    nonce = c.nonce()
    body = sign(c.key, None, {"nonce": nonce, "url": c.kid, "kid": c.kid})
    first = http.post(c.kid or "", content=json.dumps(body), headers={"Content-Type": JOSE})
    assert first.status_code == 200, first.text
    again = http.post(c.kid or "", content=json.dumps(body), headers={"Content-Type": JOSE})
    fresh = problem(again, "badNonce") and again.headers["Replay-Nonce"]
    retry = sign(c.key, None, {"nonce": fresh, "url": c.kid, "kid": c.kid})
    ok = http.post(c.kid or "", content=json.dumps(retry), headers={"Content-Type": JOSE})
    assert ok.status_code == 200, ok.text


def test_url_of_another_resource_is_unauthorized(http: httpx.Client,
                                                 acme_ca: AcmeCA) -> None:
    """A JWS whose ``url`` names another resource than the one it was sent to is
    unauthorized: it cannot be replayed elsewhere."""
    c = client(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "a.acme.test"}]},
               header={"url": c.kid})
    assert problem(r, "unauthorized")["detail"].startswith("the JWS url")


def test_kid_of_another_account_does_not_verify(http: httpx.Client,
                                                acme_ca: AcmeCA) -> None:
    """Naming another account's kid with one's own key fails the signature check
    (malformed); an unknown kid is accountDoesNotExist."""
    alice, mallory = client(http, acme_ca), client(http, acme_ca)
    r = mallory.post(alice.kid or "", {"contact": ["mailto:m@acme.test"]},
                     header={"kid": alice.kid})
    problem(r, "malformed")
    gone = mallory.post(mallory.dir["newOrder"], {"identifiers": []},
                        header={"kid": (alice.kid or "") + "x"})
    problem(gone, "accountDoesNotExist")


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_alg_none_and_hmac_are_bad_signature_algorithm(http: httpx.Client, acme_ca: AcmeCA,
                                                       alg: str) -> None:
    """``alg: none`` and HS256 (an HMAC keyed by something public) are
    badSignatureAlgorithm, listing the accepted algorithms."""
    c = client(http, acme_ca)
    header = b64(json.dumps({"alg": alg, "nonce": c.nonce(), "url": c.kid,
                             "kid": c.kid}).encode())
    payload = b64(b"")
    mac = hmac.new(b"", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    body = {"protected": header, "payload": payload, "signature": b64(mac) if alg != "none"
            else ""}
    r = http.post(c.kid or "", content=json.dumps(body), headers={"Content-Type": JOSE})
    found = problem(r, "badSignatureAlgorithm")
    assert "ES256" in found["algorithms"]  # type: ignore[operator]


def test_key_change_to_another_accounts_key_is_conflict(http: httpx.Client,
                                                        acme_ca: AcmeCA) -> None:
    """A key change to a key another account holds is 409 conflict with that account's
    URL; a key change to a fresh key moves the account to it."""
    alice, bob = client(http, acme_ca), client(http, acme_ca)
    url = alice.dir["keyChange"]

    def inner(key: object) -> dict[str, str]:
        jwk = key.public_key().to_partial_json()  # type: ignore[attr-defined]
        return sign(key, {"account": alice.kid, "oldKey": alice.jwk()},  # type: ignore[arg-type]
                    {"jwk": jwk, "url": url})

    r = alice.post(url, inner(bob.key))
    assert r.status_code == 409
    problem(r, "conflict")
    assert r.headers["Location"] == bob.kid
    fresh = new_key()
    assert alice.post(url, inner(fresh)).status_code == 200
    alice.key = fresh
    assert alice.post(alice.kid or "", None).status_code == 200


def test_the_old_key_is_refused_after_a_key_change(http: httpx.Client,
                                                   acme_ca: AcmeCA) -> None:
    """The server keeps accounts' parsed keys between requests: after a key change a
    request signed by the old key (once verified and kept) no longer verifies."""
    alice = client(http, acme_ca)
    assert alice.post(alice.kid or "", None).status_code == 200  # the old key, kept
    url, old, fresh = alice.dir["keyChange"], alice.key, new_key()
    inner = sign(fresh, {"account": alice.kid, "oldKey": alice.jwk()},
                 {"jwk": fresh.public_key().to_partial_json(), "url": url})
    assert alice.post(url, inner).status_code == 200
    found = problem(alice.post(alice.kid or "", None, key=old), "malformed")
    assert "does not verify" in str(found["detail"])
    alice.key = fresh
    assert alice.post(alice.kid or "", None).status_code == 200


def test_challenge_of_another_accounts_authorization_is_unauthorized(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """Answering a challenge of another account's authorization is unauthorized, and
    reading that authorization too."""
    alice, mallory = client(http, acme_ca), client(http, acme_ca)
    authz_url = order(alice, "a.acme.test")["authorizations"][0]  # type: ignore[index]
    chall = alice.post(authz_url, None).json()["challenges"][0]
    problem(mallory.post(chall["url"], {}), "unauthorized")
    problem(mallory.post(authz_url, None), "unauthorized")
    assert alice.post(authz_url, None).json()["status"] == "pending"


def test_finalize_with_a_name_not_ordered_is_bad_csr(http: httpx.Client,
                                                     acme_ca: AcmeCA) -> None:
    """A CSR naming an identifier not in the order is badCSR with a subproblem naming it;
    the order stays ready and the right CSR is then issued."""
    c = client(http, acme_ca)
    placed = order(c, "a.acme.test")
    authz = c.post(placed["authorizations"][0], None).json()  # type: ignore[index]
    chall = next(x for x in authz["challenges"] if x["type"] == "http-01")
    acme_ca.web.tokens[chall["token"]] = f"{chall['token']}.{c.thumbprint()}"
    assert c.post(chall["url"], {}).json()["status"] == "valid"
    csr, _ = make_csr(["a.acme.test", "b.acme.test"])
    der = _der(csr)
    r = c.post(placed["finalize"], {"csr": der})  # type: ignore[arg-type]
    found = problem(r, "badCSR")
    assert found["subproblems"][0]["identifier"] == {  # type: ignore[index]
        "type": "dns", "value": "b.acme.test"}
    good, _ = make_csr(["a.acme.test"])
    done = c.post(placed["finalize"], {"csr": _der(good)})  # type: ignore[arg-type]
    assert done.json()["status"] == "valid", done.text


def _der(pem: str) -> str:
    from cryptography import x509

    return b64(x509.load_pem_x509_csr(pem.encode()).public_bytes(Encoding.DER))


def test_unknown_resource_and_wrong_content_type(http: httpx.Client,
                                                 acme_ca: AcmeCA) -> None:
    """A path with no resource is a 404 problem; a body not sent as JOSE is malformed."""
    r = http.post(acme_ca.server.url + "/acme/nothing", content=b"{}")
    assert r.status_code == 404
    problem(r, "malformed")
    r = http.post(acme_ca.server.url + "/acme/new-order", json={"a": 1})
    assert r.status_code == 415
    problem(r, "malformed")


def test_weak_account_key_is_bad_public_key(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """An account key the CA would not certify (RSA 1024) is badPublicKey at newAccount."""
    import josepy as jose
    from cryptography.hazmat.primitives.asymmetric import rsa

    c = Client(http, acme_ca.directory,
               key=jose.JWKRSA(key=rsa.generate_private_key(65537, 1024)))
    r = c.post(c.dir["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True, alg="RS256")
    assert "1024" in problem(r, "badPublicKey")["detail"]


def test_acme_requests_keep_the_ca_apps_middleware(http: httpx.Client,
                                                   acme_ca: AcmeCA) -> None:
    """ACME requests reach the ACME app past FastAPI's router but inside the CA app's own
    middleware: an unknown resource and a wrong method are the ACME app's problem
    documents, each answer carries its request id and is counted by status class."""
    counts = acme_ca.server.app.state.http_status_counts
    before = counts.snapshot()
    base = acme_ca.directory.removesuffix("/directory")
    r = http.get(f"{base}/no-such-thing", headers={"X-Request-Id": "probe-1"})
    assert r.status_code == 404
    assert "no ACME resource at /acme/no-such-thing" in str(problem(r, "malformed")["detail"])
    assert r.headers["X-Request-Id"] == "probe-1"
    r = http.get(f"{base}/new-order")
    assert r.status_code == 405
    problem(r, "malformed")
    assert r.headers["Allow"] == "POST"
    assert http.get(acme_ca.directory).status_code == 200
    after = counts.snapshot()
    assert after["4xx"] - before["4xx"] == 2
    assert after["2xx"] - before["2xx"] == 1


def test_acme_body_over_the_limit_is_refused_at_the_edge(http: httpx.Client,
                                                          acme_ca: AcmeCA) -> None:
    """An ACME body over the CA's ``http_max_body`` is answered 413 before any of it is
    parsed, with Connection: close and the request id, and counted."""
    counts = acme_ca.server.app.state.http_status_counts
    before = counts.snapshot()
    r = http.post(acme_ca.directory.removesuffix("/directory") + "/new-order",
                  content=b"x" * (64 * 1024), headers={"Content-Type": JOSE,
                                                       "X-Request-Id": "big-1"})
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"
    assert r.headers["Connection"] == "close"
    assert r.headers["X-Request-Id"] == "big-1"
    assert counts.snapshot()["4xx"] - before["4xx"] == 1


def test_an_unexpected_error_is_a_server_internal_problem(
        http: httpx.Client, acme_ca: AcmeCA, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure the ACME server did not foresee is answered as a serverInternal problem
    document with a fresh nonce (which an ACME client can read), not a bare 500, and
    counted as a 5xx."""
    service = acme_ca.server.app.state.acme.acme

    def broken() -> dict[str, object]:
        raise RuntimeError("the directory is broken")

    monkeypatch.setattr(service, "directory", broken)
    counts = acme_ca.server.app.state.http_status_counts
    before = counts.snapshot()
    r = http.get(acme_ca.directory)
    assert r.status_code == 500
    body = problem(r, "serverInternal")
    assert "broken" not in body["detail"]  # the cause is logged, not told to the client
    assert counts.snapshot()["5xx"] - before["5xx"] == 1



def test_stopping_the_ca_lets_the_acme_worker_threads_go(tmp_path: Path,
                                                          smtp_sink: SmtpSink) -> None:
    """A CA that stops leaves no ACME worker thread behind (a process that starts and
    stops many CAs, as the tests do, would gather them)."""
    def workers() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("acme_"))

    before = workers()
    run = start_acme_ca(tmp_path, smtp_sink)
    ca = next(run)
    with httpx.Client(timeout=30) as http:
        c = Client(http, ca.directory)
        assert c.register().status_code == 201  # work in the pool: a thread starts
        order(c, "www.acme.test")
    assert workers() > before
    run.close()  # the fixture's teardown: the server stops
    deadline = time.monotonic() + 5
    while workers() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers() == before
