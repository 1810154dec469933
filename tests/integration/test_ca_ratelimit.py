"""Rate limits of the live CA (real loopback HTTP and SMTP, the CA's fake clock): login,
join, probe and recovery answer 429 with Retry-After past their limits, per client and
per account or domain; the buckets survive a restart; password hashes run a bounded
number at a time."""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwright.ca.passphrase import generate_passphrase
from certwright.ca.ratelimit import DEFAULT_RATES, parse_rate, rates_from
from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    active_account,
    fake_clock,
    questions,
    smtp_sink,
)


def only(**limits: str) -> dict[str, Any]:
    """Settings with every limit off but ``limits`` (dots written as __)."""
    rates = dict.fromkeys(DEFAULT_RATES, "off")
    rates.update({k.replace("__", "."): v for k, v in limits.items()})
    return {"rate_limits": rates}


@contextmanager
def ca(tmp_path: Path, sink: SmtpSink, clock: FakeClock,
       settings: dict[str, Any]) -> Iterator[httpx.Client]:
    with CAServer(tmp_path / "ca", smarthost=sink.smarthost, clock=clock,
                  settings=settings) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        http.server = server  # type: ignore[attr-defined]
        yield http


def assert_limited(r: httpx.Response, name: str) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"] == "rate_limited" and body["limit"] == name
    assert int(r.headers["retry-after"]) == body["retry_after"] > 0


def login(http: httpx.Client, email: str, phrase: str = "wrong") -> httpx.Response:
    return http.post("/api/v1/login", json={"email": email, "passphrase": phrase})


def test_login_per_client_then_refilled(tmp_path: Path, smtp_sink: SmtpSink,
                                        fake_clock: FakeClock) -> None:
    """3/minute per client: the 4th login is 429 whatever the email; a minute later the
    client may log in again."""
    with ca(tmp_path, smtp_sink, fake_clock, only(login__client="3/minute")) as http:
        assert [login(http, f"u{i}@mailhost.test").status_code for i in range(3)] == [401] * 3
        assert_limited(login(http, "other@mailhost.test"), "login.client")
        fake_clock.advance(seconds=20)
        assert login(http, "u9@mailhost.test").status_code == 401
        assert_limited(login(http, "u9@mailhost.test"), "login.client")


def test_login_per_account(tmp_path: Path, smtp_sink: SmtpSink,
                           fake_clock: FakeClock) -> None:
    """2/minute per account: the right passphrase is refused too once an email's bucket is
    empty; another email is not affected."""
    with ca(tmp_path, smtp_sink, fake_clock, only(login__account="2/minute")) as http:
        acct = active_account(http, smtp_sink)  # one login
        assert login(http, acct.email).status_code == 401
        assert_limited(login(http, acct.email, acct.passphrase), "login.account")
        assert login(http, "else@mailhost.test").status_code == 401


def test_probes_per_target_domain(tmp_path: Path, smtp_sink: SmtpSink,
                                  fake_clock: FakeClock) -> None:
    """2/hour per domain: a third probe of victim.test is 429 and sends no mail, from any
    account; probes of another domain still go out."""
    with ca(tmp_path, smtp_sink, fake_clock, only(probe__domain="2/hour")) as http:
        accounts = [active_account(http, smtp_sink) for _ in range(2)]
        for acct in accounts:
            for domain in ("victim.test", "other.test"):
                http.post("/api/v1/domains", json={"domain": domain},
                          headers=acct.auth).raise_for_status()
        codes = [http.post("/api/v1/domains/victim.test/probes",
                           json={"local_part": part}, headers=a.auth).status_code
                 for a, part in zip(accounts * 2, ["postmaster", "admin"] * 2, strict=True)]
        assert codes[:2] == [201, 201]
        assert_limited(http.post("/api/v1/domains/victim.test/probes",
                                 json={"local_part": "webmaster"}, headers=accounts[1].auth),
                       "probe.domain")
        mails = [m for m in smtp_sink.messages if any(r.endswith("@victim.test")
                                                      for r in m.rcpt)]
        assert len(mails) == 2
        assert http.post("/api/v1/domains/other.test/probes", json={"local_part": "admin"},
                         headers=accounts[0].auth).status_code == 201


def test_joins_per_mail_domain(tmp_path: Path, smtp_sink: SmtpSink,
                               fake_clock: FakeClock) -> None:
    """2/hour per mail domain: a third join at victim.test sends no confirmation mail."""
    with ca(tmp_path, smtp_sink, fake_clock, only(join__domain="2/hour")) as http:
        def join(email: str) -> httpx.Response:
            return http.post("/api/v1/accounts", json={
                "email": email, "name": "Quentin Zyx",
                "passphrase": generate_passphrase(), "questions": questions()})
        assert [join(f"p{i}@victim.test").status_code for i in range(2)] == [201, 201]
        assert_limited(join("p3@victim.test"), "join.domain")
        assert len(smtp_sink.messages) == 2
        assert join("p3@elsewhere.test").status_code == 201


def test_recovery_per_client(tmp_path: Path, smtp_sink: SmtpSink,
                             fake_clock: FakeClock) -> None:
    """Recovery starts and answers are limited per client address as well."""
    with ca(tmp_path, smtp_sink, fake_clock,
            only(recovery__client="2/hour", recovery_answer__client="1/hour")) as http:
        ids = [http.post("/api/v1/recovery", json={"email": f"x{i}@mailhost.test"})
               for i in range(3)]
        assert [r.status_code for r in ids[:2]] == [200, 200]
        assert_limited(ids[2], "recovery.client")
        body = {"recovery_id": ids[0].json()["recovery_id"], "answer": "no",
                "new_passphrase": generate_passphrase()}
        assert http.post("/api/v1/recovery/answer", json=body).status_code == 403
        assert_limited(http.post("/api/v1/recovery/answer", json=body),
                       "recovery_answer.client")


def test_buckets_survive_a_restart(tmp_path: Path, smtp_sink: SmtpSink,
                                   fake_clock: FakeClock) -> None:
    """An emptied bucket stays empty across a restart of the CA on the same folder."""
    settings = only(login__client="2/hour")
    with ca(tmp_path, smtp_sink, fake_clock, settings) as http:
        for _ in range(2):
            login(http, "a@mailhost.test")
    with ca(tmp_path, smtp_sink, fake_clock, settings) as http:
        assert_limited(login(http, "a@mailhost.test"), "login.client")


def test_password_hashes_are_bounded(tmp_path: Path, smtp_sink: SmtpSink,
                                     fake_clock: FakeClock) -> None:
    """40 parallel logins run at most ``password_hash_concurrency`` scrypts at once; an
    authenticated read made meanwhile is answered."""
    settings = {"rate_limits": "off", "password_hash_concurrency": 1,
                "password_hash_queue": 100}
    with ca(tmp_path, smtp_sink, fake_clock, settings) as http:
        acct = active_account(http, smtp_sink)
        codes: list[int] = []

        def one() -> None:
            with httpx.Client(base_url=str(http.base_url), timeout=60) as c:
                codes.append(login(c, acct.email).status_code)

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        assert http.get("/api/v1/domains", headers=acct.auth).status_code == 200
        for t in threads:
            t.join()
        assert codes == [401] * 40
        gate = http.server._server.config.app.state.service.gate  # type: ignore[attr-defined]
        assert gate.peak == 1


def test_hash_queue_full_is_503(tmp_path: Path, smtp_sink: SmtpSink,
                                fake_clock: FakeClock) -> None:
    """With no room to wait, a login beyond the running one is 503 busy with Retry-After."""
    settings = {"rate_limits": "off", "password_hash_concurrency": 1,
                "password_hash_queue": 0}
    with ca(tmp_path, smtp_sink, fake_clock, settings) as http:
        codes: list[int] = []
        together = threading.Barrier(20)

        def one() -> None:
            with httpx.Client(base_url=str(http.base_url), timeout=60) as c:
                c.get("/ca/root.crt")  # connected before the barrier
                together.wait()
                r = login(c, "a@mailhost.test")
                codes.append(r.status_code)
                if r.status_code == 503:
                    assert r.headers["retry-after"] == "1" and r.json()["error"] == "busy"

        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 401 in codes and 503 in codes and set(codes) <= {401, 503}


@pytest.mark.parametrize("text", ["5", "0/minute", "3/fortnight"])
def test_bad_rate_says_what_is_wrong(text: str) -> None:
    """A malformed limit names itself and the value."""
    with pytest.raises(ValueError, match=re.escape(f"login.client: '{text}'")):
        parse_rate(text, name="login.client")


def test_unknown_limit_name_refused() -> None:
    """A misspelt limit in the settings is refused with the known names."""
    with pytest.raises(ValueError, match=r"loginn\.client"):
        rates_from({"loginn.client": "1/second"})


def test_serve_options_set_the_limits(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``ca serve --rate-limit NAME=RATE`` overrides one limit over the folder's config,
    ``--rate-limit off`` lifts them all, and a wrong one is a usage error naming it."""
    import argparse

    from certwright.ca.cli import _settings, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["ca", "serve", "--dir", str(tmp_path / "none"),
                              "--rate-limit", "login.client=100/minute"])
    assert _settings(args) == {"rate_limits": {"login.client": "100/minute"}}
    args = parser.parse_args(["ca", "serve", "--dir", str(tmp_path), "--rate-limit", "off"])
    assert _settings(args) == {"rate_limits": "off"}
    with pytest.raises(SystemExit):
        parser.parse_args(["ca", "serve", "--dir", str(tmp_path),
                           "--rate-limit", "login.clients=1/minute"])
    assert "login.clients=1/minute" in capsys.readouterr().err


def test_client_hands_retry_after_to_the_engine(tmp_path: Path, smtp_sink: SmtpSink,
                                                fake_clock: FakeClock) -> None:
    """The CA's client turns a 429 into a retryable CAError carrying the CA's Retry-After,
    which the runner waits for before the step's next attempt."""
    from certwright.ca.client import CAClient, CAError

    with ca(tmp_path, smtp_sink, fake_clock, only(login__client="1/hour")) as http, \
            CAClient(str(http.base_url)) as client:
        with pytest.raises(CAError) as first:
            client.login("a@mailhost.test", "wrong")
        assert first.value.status == 401
        with pytest.raises(CAError) as limited:
            client.login("a@mailhost.test", "wrong")
    assert limited.value.status == 429 and limited.value.retryable
    assert limited.value.retry_after == 3600


def test_bad_setting_in_config_is_a_usage_error(tmp_path: Path) -> None:
    """``ca serve`` on a config.json with a malformed limit exits 2 with a sentence naming
    the setting, not a traceback; ``ca init`` writes every limit with its default."""
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "certwright", "--state-dir",
                               str(tmp_path / "s"), *args], capture_output=True, text=True,
                              timeout=120, check=False)

    ca_dir = tmp_path / "ca"
    assert cli("ca", "init", "--dir", str(ca_dir)).returncode == 0
    config = json.loads((ca_dir / "config.json").read_text())
    assert config["rate_limits"] == DEFAULT_RATES and config["http_body_timeout"] == 10.0
    config["rate_limits"]["login.client"] = "lots"
    (ca_dir / "config.json").write_text(json.dumps(config))
    done = cli("ca", "serve", "--dir", str(ca_dir), "--listen", "127.0.0.1:0")
    assert done.returncode == 2, done.stderr
    assert "login.client: 'lots'" in done.stderr and "Traceback" not in done.stderr


def test_forwarded_headers_do_not_change_the_client(tmp_path: Path, smtp_sink: SmtpSink,
                                                    fake_clock: FakeClock) -> None:
    """The client is the connection's peer: X-Forwarded-For (or Forwarded) from loopback
    does not make a new client, so it cannot dodge a per-client limit."""
    with ca(tmp_path, smtp_sink, fake_clock, only(login__client="2/minute")) as http:
        spoofed = [http.post("/api/v1/login", json={"email": f"u{i}@mailhost.test",
                                                    "passphrase": "wrong"},
                             headers={"X-Forwarded-For": f"198.51.100.{i}",
                                      "Forwarded": f"for=198.51.100.{i}"})
                   for i in range(3)]
        assert [r.status_code for r in spoofed[:2]] == [401, 401]
        assert_limited(spoofed[2], "login.client")
