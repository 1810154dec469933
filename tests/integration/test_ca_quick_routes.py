"""``POST /api/v1/confirmations`` answered at the CA's edge (ca/quickroutes.py) exactly as
the framework's route answers it: every case is sent twice, once to the edge's quick route
and once with the quick routes taken away, and the two answers compared; what the quick
route hands back (a body the model refuses, a body that is not JSON, an error nobody
foresaw) is answered by the framework, logged and counted once."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog

from certwright.ca.acme.front import AcmeFront
from certwright.ca.server import CAServer
from tests.support.ca import (  # noqa: F401  (fixtures)
    LINK_RE,
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    smtp_sink,
)

PATH = "/api/v1/confirmations"


def _front(server: CAServer, http: httpx.Client) -> AcmeFront:
    http.get("/api/v1/health")  # the middleware stack is built at the first request
    front = server.app.middleware_stack
    assert isinstance(front, AcmeFront)
    return front


def _links(http: httpx.Client, sink: SmtpSink, acct: Account, n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        domain = f"d{i}.example.test"
        http.post("/api/v1/domains", json={"domain": domain},
                  headers=acct.auth).raise_for_status()
        http.post(f"/api/v1/domains/{domain}/probes", json={"local_part": "postmaster"},
                  headers=acct.auth).raise_for_status()
        _, rid, token = LINK_RE.search(  # type: ignore[union-attr]
            sink.last_to(f"postmaster@{domain}").link()).groups()
        out.append((rid, token))
    return out


def _both(http: httpx.Client, front: AcmeFront, send: Any) -> tuple[httpx.Response, ...]:
    """``send()`` through the quick route, then through the framework's route."""
    quick = send()
    kept, front.quick = front.quick, {}
    try:
        framework = send()
    finally:
        front.quick = kept
    return quick, framework


def _same(a: httpx.Response, b: httpx.Response, ignore: tuple[str, ...] = ()) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.headers.get("retry-after") == b.headers.get("retry-after")
    ja, jb = a.json(), b.json()
    assert {k: v for k, v in ja.items() if k not in ignore} == \
        {k: v for k, v in jb.items() if k not in ignore}


def test_every_answer_of_the_quick_route_is_the_frameworks(
        ca_server: CAServer, http: httpx.Client, smtp_sink: SmtpSink) -> None:
    acct = active_account(http, smtp_sink)
    front = _front(ca_server, http)
    assert ("POST", PATH) in front.quick
    links = iter(_links(http, smtp_sink, acct, 6))

    def fresh() -> httpx.Response:
        rid, token = next(links)
        return http.post(PATH, json={"request_id": rid, "token": token})
    ok, ok2 = _both(http, front, fresh)  # two links, each verified once
    assert ok.status_code == 200 and ok.json()["status"] == "verified"
    _same(ok, ok2, ignore=("domain",))

    for body in ({"request_id": "nope", "token": "x"},  # unknown link: 404
                 {"request_id": "a" * 101, "token": "x"},  # refused by the model: 422
                 {"token": "x"},  # a field missing: 422
                 {"request_id": "x", "token": "y", "action": "dance"}):  # 422 from the work
        _same(*_both(http, front, lambda b=body: http.post(PATH, json=b)))

    rid, token = next(links)
    wrong = _both(http, front, lambda: http.post(PATH, json={"request_id": rid,
                                                             "token": "wrong"}))
    assert wrong[0].status_code == 403 and wrong[0].json()["attempts_left"] == 5
    assert wrong[1].json()["attempts_left"] == 4  # the same link: one failure more
    _same(*wrong, ignore=("attempts_left", "message"))
    http.post(PATH, json={"request_id": rid, "token": token}).raise_for_status()
    _same(*_both(http, front, lambda: http.post(PATH, json={"request_id": rid,
                                                            "token": token})))  # replayed
    _same(*_both(http, front, lambda: http.post(  # not JSON
        PATH, content=b"request_id=x&token=y",
        headers={"content-type": "application/x-www-form-urlencoded"})))
    _same(*_both(http, front, lambda: http.post(  # JSON with a charset: the quick route's
        PATH, content=b'{"request_id": "nope", "token": "x"}',
        headers={"content-type": "application/json; charset=utf-8"})))


def test_answered_and_handed_back_requests_are_logged_and_counted_once(
        ca_server: CAServer, http: httpx.Client, smtp_sink: SmtpSink) -> None:
    acct = active_account(http, smtp_sink)
    front = _front(ca_server, http)
    [(rid, token)] = _links(http, smtp_sink, acct, 1)
    counts = ca_server.app.state.http_status_counts
    before = counts.snapshot()
    with structlog.testing.capture_logs() as logs:
        ok = http.post(PATH, json={"request_id": rid, "token": token},
                       headers={"X-Request-Id": "quick-1"})
        bad = http.post(PATH, json={"token": "x"})  # handed back: the framework's 422
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "quick-1"
    assert bad.status_code == 422 and bad.headers["x-request-id"]
    lines = [e for e in logs if e["event"] == "http_request" and e["path"] == PATH]
    assert [e["status"] for e in lines] == [200, 422]
    after = counts.snapshot()
    assert (after["2xx"] - before["2xx"], after["4xx"] - before["4xx"]) == (1, 1)
    assert front.quick  # still there


def test_an_error_nobody_foresaw_is_the_frameworks_answer(
        ca_server: CAServer, http: httpx.Client, smtp_sink: SmtpSink,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The work fails in the quick route and again in the framework's route: the client
    gets the framework's answer to it, and nothing is half done."""
    acct = active_account(http, smtp_sink)
    [(rid, token)] = _links(http, smtp_sink, acct, 1)
    accounts = ca_server.app.state.service.accounts
    calls: list[str] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(accounts, "confirm", broken)
    r = http.post(PATH, json={"request_id": rid, "token": token})
    assert r.status_code == 500
    assert calls == [rid, rid]  # the quick route's try, then the framework's
    monkeypatch.undo()
    with httpx.Client(base_url=ca_server.url) as fresh:  # the server closed that connection
        again = fresh.post(PATH, json={"request_id": rid, "token": token})
    assert again.status_code == 200 and again.json()["status"] == "verified"
