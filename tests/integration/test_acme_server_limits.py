"""The CA's rate limits apply to its ACME server: past ``acme_account.client`` a
newAccount is rateLimited with Retry-After, past ``acme_order.account`` a newOrder too."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.acme_client import Client
from tests.support.acme_server import AcmeCA, start_acme_ca
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)

URN = "urn:ietf:params:acme:error:"


@pytest.fixture
def limited(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink, settings={"rate_limits": {
        "acme_account.client": "2/hour", "acme_order.account": "1/hour"}})


def test_new_accounts_and_orders_are_rate_limited(limited: AcmeCA) -> None:
    """The third newAccount from one address within the hour and the second newOrder of
    one account are rateLimited (429, Retry-After); a known key is not counted."""
    with httpx.Client(timeout=30) as http:
        first, second = Client(http, limited.directory), Client(http, limited.directory)
        assert first.register().status_code == 201
        assert second.register().status_code == 201
        assert first.register().status_code == 200  # its own account again: no new one
        third = Client(http, limited.directory).register()
        assert third.status_code == 429
        assert third.json()["type"] == URN + "rateLimited"
        assert int(third.headers["Retry-After"]) > 0
        ident = {"identifiers": [{"type": "dns", "value": "a.acme.test"}]}
        assert first.post(first.dir["newOrder"], ident).status_code == 201
        again = first.post(first.dir["newOrder"], ident)
        assert again.status_code == 429
        assert again.json()["type"] == URN + "rateLimited"
        assert second.post(second.dir["newOrder"], ident).status_code == 201
