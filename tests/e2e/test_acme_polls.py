"""certwright's ACME client asks the built-in CA no more than it must: the CA validates
a challenge as it is answered and says so, so the client does not poll the
authorization afterwards; the whole issuance is the requests counted here, from the CA's
own request log."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_acme_ari import run_args
from tests.e2e.test_acme_cli import cli
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink, http01_port=peer_port)


def test_a_challenge_the_ca_says_is_valid_is_not_polled(
        ca: AcmeCA, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    done = cli(tmp_path / "state", *run_args(ca, tmp_path, "polls"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = capfd.readouterr()  # the CA runs in this process: its log is captured here
    paths = re.findall(r"method=(\w+) ms=\S+ path=/acme/([a-z-]+)", out.err + out.out)
    asked = [f"{method} {path}" for method, path in paths]
    # the authorization is read to present the answer and again to answer it; no poll
    assert asked.count("POST authz") == 2, asked
    assert asked.count("POST chall") == 1, asked
    assert asked.count("POST new-order") == 1, asked
