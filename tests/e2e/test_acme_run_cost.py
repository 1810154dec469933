"""What a one-shot ``certwright run acme`` costs the CA, counted at a real Pebble: a known
account is found without a newAccount POST or a directory GET (both are kept with the
account), a stale kept directory is fetched again, and the run's requests share one
kept-alive connection (counted by a TCP proxy in front of Pebble)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.steps import acme
from tests.e2e.test_acme_cli import cli, run_args
from tests.integration.test_acme import Env, _start, make_csr
from tests.integration.test_acme_pipeline import verify_installed
from tests.support.tcpcount import CountingProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def requests_at(env: Env, since: int) -> list[str]:
    """The requests Pebble logged after the first ``since`` lines of its log, as
    ``"METHOD /path"`` (Pebble logs ``METHOD /path -> calling handler()`` for each)."""
    lines = (env.pebble.folder / "pebble.log").read_text().splitlines()[since:]
    return [line.split(" ", 3)[3].removesuffix(" -> calling handler()")
            for line in lines if line.endswith("-> calling handler()")]


def log_length(env: Env) -> int:
    return len((env.pebble.folder / "pebble.log").read_text().splitlines())


def test_known_account_is_used_without_new_account_post_or_directory_get(env: Env) -> None:
    state = env.tmp / "state"
    first = cli(state, *run_args(env, "a1.acme.test", "c1"))
    assert first.returncode == 0, first.stderr[-3000:]
    mark = log_length(env)
    second = cli(state, *run_args(env, "a2.acme.test", "c2"))
    assert second.returncode == 0, second.stderr[-3000:]
    verify_installed(env, env.tmp / "certs" / "c2", "a2.acme.test")
    seen = requests_at(env, mark)
    assert "POST /sign-me-up" not in seen, seen
    assert "GET /dir" not in seen, seen
    assert seen.count("HEAD /nonce-plz") == 1, seen  # one nonce fetched; the rest ride along


def test_a_kept_directory_naming_a_gone_endpoint_is_fetched_again(env: Env) -> None:
    state = env.tmp / "state"
    first = cli(state, *run_args(env, "b1.acme.test", "s1"))
    assert first.returncode == 0, first.stderr[-3000:]
    [kept] = (state / "acme" / "accounts").glob("*/directory.json")
    data = json.loads(kept.read_text())
    data["document"]["newOrder"] = data["document"]["newOrder"].replace("order-plz", "gone")
    kept.write_text(json.dumps(data))
    mark = log_length(env)
    second = cli(state, *run_args(env, "b2.acme.test", "s2"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert requests_at(env, mark).count("GET /dir") == 1
    assert "order-plz" in json.loads(kept.read_text())["document"]["newOrder"]


def test_a_corrupt_kept_directory_is_ignored_and_replaced(env: Env) -> None:
    state = env.tmp / "state"
    first = cli(state, *run_args(env, "d1.acme.test", "k1"))
    assert first.returncode == 0, first.stderr[-3000:]
    [kept] = (state / "acme" / "accounts").glob("*/directory.json")
    kept.write_text("{not json")
    second = cli(state, *run_args(env, "d2.acme.test", "k2"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "newOrder" in json.loads(kept.read_text())["document"]


def test_one_run_keeps_one_connection_to_the_ca(env: Env) -> None:
    state = env.tmp / "state"
    proxy = CountingProxy(("127.0.0.1", env.pebble.port)).start()
    try:
        through = env.pebble.directory.replace(f":{env.pebble.port}/", f":{proxy.port}/")
        first = cli(state, *run_args(env, "e1.acme.test", "p1", directory=through))
        assert first.returncode == 0, first.stderr[-3000:]
        before = proxy.connections
        second = cli(state, *run_args(env, "e2.acme.test", "p2", directory=through))
        assert second.returncode == 0, second.stderr[-3000:]
        assert proxy.connections - before == 1
    finally:
        proxy.stop()


def test_download_after_finalize_asks_only_for_the_certificate(env: Env) -> None:
    """Finalize keeps the certificate URL it saw with the run's order, so the download
    POSTs to it directly instead of reading the order once more."""
    domains = ["f1.acme.test"]
    env.run(acme.Account())
    env.run(acme.Order(), domains=domains)
    env.run(acme.Challenge(), type="http-01", http_address=env.http_address)
    assert env.run(acme.Finalize(), csr=str(make_csr(env.tmp / "csr", domains)))["status"] \
        == "valid"
    mark = log_length(env)
    out = env.run(acme.Download())
    assert requests_at(env, mark) == ["POST /certZ/"]
    assert Path(out["cert_path"]).read_text().startswith("-----BEGIN CERTIFICATE")


def test_download_of_a_certificate_url_the_ca_forgot_reads_the_order(env: Env) -> None:
    domains = ["f2.acme.test"]
    env.run(acme.Account())
    env.run(acme.Order(), domains=domains)
    env.run(acme.Challenge(), type="http-01", http_address=env.http_address)
    env.run(acme.Finalize(), csr=str(make_csr(env.tmp / "csr", domains)))
    saved = env.run_dir / "acme-order.json"
    data = json.loads(saved.read_text())
    data["certificate_url"] = data["certificate_url"].replace("/certZ/", "/certZ/gone-")
    saved.write_text(json.dumps(data))
    mark = log_length(env)
    out = env.run(acme.Download())
    assert requests_at(env, mark)[-2:] == ["POST /my-order/", "POST /certZ/"]
    assert Path(out["cert_path"]).read_text().startswith("-----BEGIN CERTIFICATE")
