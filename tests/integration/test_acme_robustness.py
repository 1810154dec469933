"""ACME steps under hostile conditions: rate limits, 503s, EAB, alternate chains, split states."""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from certwright.clock import SystemClock
from certwright.engine.plugins.step import StepContext
from certwright.errors import PermanentError, StepError
from certwright.steps import acme
from certwright.steps.acme import responder as acme_responder
from certwright.steps.acme.network import MAX_RETRY_AFTER, SERVER_RETRIES
from tests.integration.test_acme import Env, _start, issue, make_csr, verify_chain


class FakeCA:
    """A loopback http:// server speaking just enough ACME to register an account.

    ``fail[path]`` is a list of (status, retry_after) answered before the real answer (a
    negative status: answered forever); paths in ``plain`` fail with an HTML page instead of
    a problem document, as a load balancer in front of a CA does.
    """

    def __init__(self) -> None:
        self.fail: dict[str, list[tuple[int, str]]] = {}
        self.plain: set[str] = set()
        self.hits: list[str] = []
        ca = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                ca.hits.append(f"{method} {self.path}")
                if method == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                queue = ca.fail.get(self.path)
                if queue:
                    last_forever = len(queue) == 1 and queue[0][0] < 0
                    status, retry_after = queue[0] if last_forever else queue.pop(0)
                    status = abs(status)
                    kind = "rateLimited" if status == 429 else "serverInternal"
                    body = json.dumps({"type": f"urn:ietf:params:acme:error:{kind}",
                                       "detail": f"try later ({status})"}).encode()
                    ctype = "application/problem+json"
                    if self.path in ca.plain:
                        body, ctype = b"<html><body>Service Unavailable</body></html>", "text/html"
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    if retry_after:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Replay-Nonce", "bm9uY2U")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                base = f"http://127.0.0.1:{ca.port}"
                if self.path == "/dir":
                    body = json.dumps({"newNonce": f"{base}/nonce", "newAccount": f"{base}/acct",
                                       "newOrder": f"{base}/order", "revokeCert": f"{base}/rev",
                                       "keyChange": f"{base}/kc"}).encode()
                    status = 200
                elif self.path == "/nonce":
                    body, status = b"", 200
                elif self.path == "/order":  # newOrder
                    body, status = json.dumps({
                        "status": "pending", "expires": "2030-01-01T00:00:00Z",
                        "identifiers": [{"type": "dns", "value": "x.acme.test"}],
                        "authorizations": [], "finalize": f"{base}/fin/2"}).encode(), 201
                else:
                    body, status = json.dumps({"status": "valid"}).encode(), 201
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Replay-Nonce", "bm9uY2U")
                if self.path == "/acct":
                    self.send_header("Location", f"{base}/acct/1")
                if self.path == "/order":
                    self.send_header("Location", f"{base}/order/2")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_HEAD(self) -> None:
                self._answer("HEAD")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_ca() -> Iterator[FakeCA]:
    ca = FakeCA()
    yield ca
    ca.stop()


def _ctx(tmp_path: Path, ca: FakeCA, sleeps: list[float]) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="acme_account",
                       idempotency_key="r1:1:0", attempt=1,
                       params={"directory": f"http://127.0.0.1:{ca.port}/dir",
                               "allow_insecure": True, "contact": "a@acme.test"},
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock(),
                       services={"sleep": sleeps.append})


def test_503_and_429_are_retried_in_place_after_a_short_retry_after(tmp_path: Path,
                                                                     fake_ca: FakeCA) -> None:
    """503 on the directory and 429 on newAccount are retried after their Retry-After."""
    fake_ca.fail["/dir"] = [(503, "7")]
    fake_ca.fail["/acct"] = [(429, "3")]
    sleeps: list[float] = []
    out = acme.Account().run(_ctx(tmp_path, fake_ca, sleeps)).outputs
    assert out["account_url"].endswith("/acct/1")
    assert sleeps == [7.0, 3.0]
    assert fake_ca.hits.count("POST /acct") == 2


def test_a_long_retry_after_becomes_the_runs_backoff(tmp_path: Path, fake_ca: FakeCA) -> None:
    """A 429 asking for an hour (delta-seconds or an HTTP-date) is not slept in a worker: the
    step fails retryably with retry_after, which the engine honours (tests/unit/test_runner)."""
    fake_ca.fail["/acct"] = [(429, "3600")]
    sleeps: list[float] = []
    with pytest.raises(StepError) as info:
        acme.Account().run(_ctx(tmp_path, fake_ca, sleeps))
    assert not isinstance(info.value, PermanentError)
    assert info.value.retry_after == 3600.0 and sleeps == []
    assert "rateLimited" in str(info.value) and "retry after 3600s" in str(info.value)
    assert fake_ca.hits.count("POST /acct") == 1
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
                                       usegmt=True)
    fake_ca.fail["/acct"] = [(503, when)]
    with pytest.raises(StepError) as info:
        acme.Account().run(_ctx(tmp_path, fake_ca, sleeps))
    assert 7190 <= (info.value.retry_after or 0) <= 7200 and sleeps == []
    assert MAX_RETRY_AFTER < 7190


def test_a_503_without_a_problem_document_is_retried_too(tmp_path: Path,
                                                         fake_ca: FakeCA) -> None:
    """An HTML 503 (a proxy in front of the CA) is retried after its Retry-After like a
    problem document; one that never ends gives a retryable error saying what came back."""
    fake_ca.plain.add("/acct")
    fake_ca.fail["/acct"] = [(503, "2")]
    sleeps: list[float] = []
    assert acme.Account().run(_ctx(tmp_path, fake_ca, sleeps)).outputs["account_url"]
    assert sleeps == [2.0]
    fake_ca.fail["/order"] = [(-503, "")]
    fake_ca.plain.add("/order")
    ctx = _ctx(tmp_path, fake_ca, sleeps)
    ctx.params["domains"] = ["x.acme.test"]
    with pytest.raises(StepError) as info:
        acme.Order().run(ctx)
    assert not isinstance(info.value, PermanentError)
    assert "HTTP 503 without a problem document" in str(info.value)
    assert info.value.retry_after == 1.0  # no Retry-After: a second
    assert fake_ca.hits.count("POST /order") == 1 + SERVER_RETRIES


def test_a_struggling_ca_never_gets_a_second_order(tmp_path: Path, fake_ca: FakeCA) -> None:
    """The saved order answers 500: the step fails retryably and opens no new order; only
    when the CA says the order does not exist (404) is a new one opened."""
    sleeps: list[float] = []
    acme.Account().run(_ctx(tmp_path, fake_ca, sleeps))
    ctx = _ctx(tmp_path, fake_ca, sleeps)
    ctx.params["domains"] = ["x.acme.test"]
    first = acme.Order().run(ctx).outputs
    assert first["order_url"].endswith("/order/2") and fake_ca.hits.count("POST /order") == 1
    fake_ca.fail["/order/2"] = [(500, "")]
    with pytest.raises(StepError) as info:
        acme.Order().run(ctx)
    assert not isinstance(info.value, PermanentError) and "serverInternal" in str(info.value)
    assert fake_ca.hits.count("POST /order") == 1  # no second order
    fake_ca.fail["/order/2"] = [(404, "")]
    again = acme.Order().run(ctx).outputs
    assert again["reused"] is False and fake_ca.hits.count("POST /order") == 2


def test_endless_rate_limit_gives_a_retryable_error_with_the_problem(tmp_path: Path,
                                                                     fake_ca: FakeCA) -> None:
    """A CA that keeps answering 429 makes a retryable StepError naming the problem, bounded."""
    fake_ca.fail["/acct"] = [(-429, "1")]  # negative: repeat forever
    sleeps: list[float] = []
    with pytest.raises(StepError) as info:
        acme.Account().run(_ctx(tmp_path, fake_ca, sleeps))
    assert not isinstance(info.value, PermanentError)
    assert "rateLimited" in str(info.value) and "try later (429)" in str(info.value)
    assert len(sleeps) == SERVER_RETRIES


@pytest.fixture
def eab_env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path, eab_keys={
        "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"})


def test_external_account_binding(eab_env: Env) -> None:
    """A CA requiring EAB refuses without it (PermanentError) and registers with it."""
    with pytest.raises(PermanentError, match="external account binding"):
        eab_env.run(acme.Account())
    out = eab_env.run(acme.Account(), eab_kid="kid-1",
                      eab_hmac_key="zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W")
    assert out["account_url"].startswith(eab_env.pebble.directory.rsplit("/", 1)[0])


@pytest.fixture
def alt_env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path, extra_env={"PEBBLE_ALTERNATE_ROOTS": "1"})


def test_preferred_chain_picks_the_alternate_root(alt_env: Env) -> None:
    """preferred_chain names the alternate root's CN; the written chain leads to that root."""
    env = alt_env
    domains = ["alt.acme.test"]
    default = issue(env, domains, type="http-01", http_address=env.http_address)
    alt_root = env.pebble.issuing_roots(1)[0]
    alt_cn = alt_root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    out = env.run(acme.Download(), preferred_chain=alt_cn, out_dir=str(env.tmp / "alt"))
    chain = x509.load_pem_x509_certificates(Path(out["chain_path"]).read_bytes())
    assert chain[-1].issuer == alt_root.subject
    assert out["serial"] == default["serial"]  # same leaf, other chain


def test_present_then_wait_in_two_states(env_pair: Env) -> None:
    """wait: false presents only (state 'registered'); wait: true answers and polls ('probed')."""
    env = env_pair
    domains = ["split.acme.test"]
    env.run(acme.Account())
    env.run(acme.Order(), domains=domains)
    first = env.run(acme.Challenge(), type="http-01", http_address=env.http_address, wait=False)
    assert first["status"] == "presented"
    assert acme_responder.find(env.http_address) is not None  # still serving for the CA
    again = env.run(acme.Challenge(), type="http-01", http_address=env.http_address)
    assert again["status"] == "valid"
    assert acme_responder.find(env.http_address) is None
    csr = make_csr(env.tmp / "csr", domains)
    env.run(acme.Finalize(), csr=str(csr))
    verify_chain(env, env.run(acme.Download()), domains)


def test_finalize_refuses_a_csr_for_other_names(env_pair: Env) -> None:
    """A CSR whose names differ from the order's is a PermanentError naming both sets."""
    env = env_pair
    env.run(acme.Account())
    env.run(acme.Order(), domains=["right.acme.test"])
    env.run(acme.Challenge(), type="http-01", http_address=env.http_address)
    csr = make_csr(env.tmp / "csr", ["wrong.acme.test"])
    with pytest.raises(PermanentError, match=r"wrong\.acme\.test.*right\.acme\.test"):
        env.run(acme.Finalize(), csr=str(csr))


@pytest.fixture
def env_pair(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def test_responder_is_shared_by_address_and_serves_only_tokens(tmp_path: Path) -> None:
    """acquire() shares one listener per address; the last release stops it; junk paths 404."""
    import urllib.error
    import urllib.request

    from tests.support.pebble import free_port

    address = f"127.0.0.1:{free_port()}"
    first = acme_responder.acquire(address)
    assert acme_responder.acquire(address) is first
    first.add("tok_en-1", "tok_en-1.thumb")
    (tmp_path / "secret").write_text("no")
    first.folder = tmp_path / "acme-challenge"
    url = f"http://{address}/.well-known/acme-challenge/"
    with urllib.request.urlopen(url + "tok_en-1", timeout=5) as resp:
        assert resp.read() == b"tok_en-1.thumb"
    for bad in ("..%2Fsecret", "../secret", "unknown"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + bad, timeout=5)
        assert info.value.code == 404
    acme_responder.release(address)
    assert acme_responder.find(address) is first  # one user left
    acme_responder.release(address)
    assert acme_responder.find(address) is None
    with pytest.raises(urllib.error.URLError):  # the responder is gone: refused
        urllib.request.urlopen(url + "tok_en-1", timeout=2)


def test_polling_honours_retry_after_and_hands_long_ones_to_the_engine(tmp_path: Path) -> None:
    """While polling, a Retry-After up to max_retry_after is slept; a longer one ends the
    step retryably with retry_after, so the run backs off instead of holding a worker."""
    from certwright.steps.acme.issue import poll_until

    def answer(retry_after: str) -> requests.Response:
        resp = requests.Response()
        resp.status_code = 200
        resp.headers["Retry-After"] = retry_after
        return resp

    sleeps: list[float] = []
    ctx = StepContext(run_id="r1", pipeline="t", state="s", step_id="acme_finalize",
                      idempotency_key="r1:1:0", attempt=1, params={"max_retry_after": 10},
                      run_dir=tmp_path, state_dir=tmp_path, clock=SystemClock(),
                      services={"sleep": sleeps.append})
    answers = iter([(False, answer("4")), (True, None)])
    poll_until(ctx, lambda: next(answers), "the order")
    assert sleeps == [4.0]
    with pytest.raises(StepError) as info:
        poll_until(ctx, lambda: (False, answer("120")), "the order")
    assert info.value.retry_after == 120.0 and not isinstance(info.value, PermanentError)
    assert "poll the order again in 120s" in str(info.value) and sleeps == [4.0]


def test_an_answer_in_hand_is_the_first_poll_and_the_schedule_doubles(tmp_path: Path) -> None:
    """An answer the step already holds replaces the first poll (no request at once for
    what the CA just said); without Retry-After the waits start at 0.02 s and double."""
    from certwright.steps.acme.issue import poll_until

    sleeps: list[float] = []
    ctx = StepContext(run_id="r1", pipeline="t", state="s", step_id="acme_finalize",
                      idempotency_key="r1:1:0", attempt=1, params={},
                      run_dir=tmp_path, state_dir=tmp_path, clock=SystemClock(),
                      services={"sleep": sleeps.append})
    calls: list[int] = []

    def check() -> tuple[bool, requests.Response | None]:
        calls.append(1)
        return len(calls) == 3, None

    poll_until(ctx, check, "the order", first=(False, None))
    assert len(calls) == 3 and sleeps == [0.02, 0.04, 0.08]
    calls.clear()
    poll_until(ctx, check, "the order", first=(True, None))
    assert calls == []  # done in hand: not asked again
    poll_until(ctx, check, "the order")  # nothing in hand: the CA is asked first
    assert len(calls) == 3 and sleeps[3:] == [0.02, 0.04]


def test_the_orders_expiry_is_put_on_our_clock(tmp_path: Path, fake_ca: FakeCA) -> None:
    """``expires`` is the CA's remaining time (its expires minus its Date) on our clock, so
    a clock 100 days ahead here does not see the order as long expired; ``ca_expires`` is
    the CA's instant as sent."""
    from certwright.clock import OffsetClock, parse_instant
    sleeps: list[float] = []
    acme.Account().run(_ctx(tmp_path, fake_ca, sleeps))
    ctx = _ctx(tmp_path, fake_ca, sleeps)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=100)
    ctx.clock = OffsetClock(ahead)
    ctx.params["domains"] = ["x.acme.test"]
    out = acme.Order().run(ctx).outputs
    ca_expires = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert parse_instant(out["ca_expires"]) == ca_expires
    left = ca_expires - dt.datetime.now(dt.UTC)
    ours = parse_instant(out["expires"]) - ctx.clock.now()
    assert abs((ours - left).total_seconds()) < 3  # the Date header has 1 s resolution
