"""API consistency over real HTTP: idempotency keys mean one request, a domain is spelled
one way on every route, a 405 says what is allowed, and the OpenAPI document lists every
status each endpoint answers."""
from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from certwright.ca.server import CAServer
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    smtp_sink,
)


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    return active_account(http, smtp_sink)


def add(http: httpx.Client, acct: Account, domain: str) -> None:
    http.post("/api/v1/domains", json={"domain": domain}, headers=acct.auth).raise_for_status()


def probe(http: httpx.Client, acct: Account, domain: str, key: str,
          local: str = "postmaster") -> httpx.Response:
    return http.post(f"/api/v1/domains/{domain}/probes",
                     json={"local_part": local, "idempotency_key": key}, headers=acct.auth)


def test_probe_key_reused_for_another_request_is_409(http: httpx.Client, smtp_sink: SmtpSink,
                                                     acct: Account) -> None:
    """A probe's idempotency key repeated for the same domain and address answers the
    first probe (200, no second mail); for another domain or another address it is 409
    idempotency_key_reused, as signing answers, and nothing is sent."""
    add(http, acct, "first.test")
    add(http, acct, "victim.test")
    first = probe(http, acct, "first.test", "key-1")
    assert first.status_code == 201, first.text
    again = probe(http, acct, "first.test", "key-1")
    assert again.status_code == 200 and again.json() == first.json()
    for domain, local in (("victim.test", "postmaster"), ("first.test", "webmaster")):
        r = probe(http, acct, domain, "key-1", local)
        assert r.status_code == 409, (domain, local, r.text)
        assert r.json()["error"] == "idempotency_key_reused"
        assert r.json()["probe_id"] == first.json()["probe_id"]
    assert smtp_sink.to("postmaster@victim.test") == []
    assert smtp_sink.to("webmaster@first.test") == []
    assert len(smtp_sink.to("postmaster@first.test")) == 1


def test_concurrent_probes_with_one_key_make_one_probe(smtp_sink: SmtpSink, acct: Account,
                                                        ca_server: CAServer) -> None:
    """Six probes with the same key released at once (a client retrying while its first
    request is in flight) make one probe and one mail; the others repeat it, none fails
    on the store's unique index."""
    issuing = ca_server._server.config.app.state.service.issuing  # type: ignore[union-attr]
    failures: list[str] = []
    for round_ in range(20):
        domain = f"race{round_}.test"
        issuing.add_domain(acct.account_id, domain)
        barrier = threading.Barrier(6)
        results: list[str] = []

        def one(domain: str = domain, key: str = f"key-{round_}",
                barrier: threading.Barrier = barrier, results: list[str] = results) -> None:
            barrier.wait()
            try:
                results.append(issuing.probe(acct.account_id, domain, "postmaster", key)[0]
                               ["probe_id"])
            except Exception as exc:  # noqa: BLE001  (the test reports every failure)
                failures.append(repr(exc))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) <= 1, results
        assert len(smtp_sink.to(f"postmaster@{domain}")) == (1 if results else 0)
    assert failures == []


def test_trailing_dot_is_the_same_domain_on_every_route(http: httpx.Client,
                                                       acct: Account) -> None:
    """``victim.test.`` and ``Victim.Test`` name victim.test for GET, probes and DELETE."""
    add(http, acct, "victim.test")
    got = http.get("/api/v1/domains/victim.test.", headers=acct.auth)
    assert got.status_code == 200 and got.json()["domain"] == "victim.test"
    p = probe(http, acct, "Victim.Test.", "k1")
    assert p.status_code == 201 and p.json()["address"] == "postmaster@victim.test", p.text
    gone = http.delete("/api/v1/domains/victim.test.", headers=acct.auth)
    assert gone.status_code == 204, gone.text
    assert http.get("/api/v1/domains/victim.test", headers=acct.auth).status_code == 404


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/api/v1/domains/victim.test", {"GET", "DELETE"}),
    ("GET", "/api/v1/login", {"POST"}),
    ("DELETE", "/api/v1/certificates", {"GET", "POST"}),
    ("POST", "/ca/root.crt", {"GET"}),
])
def test_405_names_the_allowed_methods(method: str, path: str, allowed: set[str],
                                       http: httpx.Client) -> None:
    """A method the path does not serve is 405 with an Allow header naming every method
    that it does serve (RFC 9110 15.5.6)."""
    r = http.request(method, path)
    assert r.status_code == 405, r.text
    assert r.json()["error"] == "method_not_allowed"
    header = {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}
    assert allowed <= header and method not in header, r.headers


# What each endpoint can answer besides success: its own refusals, 401 where a bearer
# token is needed, 413/422 where a body or parameters are read, 429 where the rate limit
# applies (join, login, probe, recovery).
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("post", "/api/v1/accounts"): {200, 201, 409, 413, 422, 429, 502},
    ("post", "/api/v1/confirmations"): {200, 403, 404, 410, 413, 422},
    ("post", "/api/v1/login"): {200, 401, 403, 413, 422, 429},
    ("post", "/api/v1/recovery"): {200, 413, 422, 429},
    ("post", "/api/v1/recovery/answer"): {200, 403, 413, 422, 429},
    ("post", "/api/v1/domains"): {200, 201, 401, 413, 422},
    ("get", "/api/v1/domains"): {200, 401},
    ("get", "/api/v1/domains/{domain}"): {200, 401, 404, 422},
    ("delete", "/api/v1/domains/{domain}"): {204, 401, 404, 422},
    ("post", "/api/v1/domains/{domain}/probes"): {200, 201, 401, 404, 409, 413, 422, 429,
                                                  502},
    ("post", "/api/v1/certificates"): {200, 201, 401, 409, 413, 422},
    ("get", "/api/v1/certificates"): {200, 401, 404, 422},
    ("get", "/api/v1/certificates/{serial}"): {200, 404, 422},
    ("post", "/api/v1/certificates/{serial}/revoke"): {200, 401, 404, 413, 422},
}


def test_openapi_lists_every_status(http: httpx.Client) -> None:
    """Each API operation documents the statuses it can answer, and every error status
    has the JSON error body ({error, message}) as its schema, not FastAPI's default."""
    doc = http.get("/openapi.json").json()
    ops: dict[tuple[str, str], Any] = {(m, p): op for p, item in doc["paths"].items()
                                       for m, op in item.items()}
    for key, statuses in EXPECTED.items():
        assert key in ops, key
        documented = {int(s) for s in ops[key]["responses"]}
        assert statuses <= documented, (key, sorted(statuses - documented))
        for status in documented - {200, 201, 204}:
            schema = ops[key]["responses"][str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (key, status, schema)
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message"}


@pytest.mark.parametrize(("path", "media_type"), [
    ("/ca/intermediate.crt", "application/pkix-cert"),
    ("/ca/root.crt", "application/x-pem-file"),
    ("/ca/crl", "application/pkix-crl"),
])
def test_openapi_names_the_media_types(path: str, media_type: str,
                                       http: httpx.Client) -> None:
    """The CA's certificates and CRL are documented with the media type they are served
    with, not as JSON."""
    doc = http.get("/openapi.json").json()
    content = doc["paths"][path]["get"]["responses"]["200"]["content"]
    assert set(content) == {media_type}
    assert http.get(path).headers["content-type"].startswith(media_type)
