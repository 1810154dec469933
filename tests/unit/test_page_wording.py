"""The CA pages' wording: expiry in words and in UTC, masked account addresses."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certwright.ca._pages import expiry_words, mask_email, utc_words

NOW = datetime(2026, 12, 1, 0, 35, tzinfo=UTC)


@pytest.mark.parametrize(("left", "words"), [
    (timedelta(hours=47, minutes=59), "expires in 47 hours"),
    (timedelta(hours=48), "expires in 48 hours"),
    (timedelta(hours=2), "expires in 2 hours"),
    (timedelta(hours=1, minutes=5), "expires in 1 hour 5 minutes"),
    (timedelta(minutes=1, seconds=30), "expires in 1 minute"),
    (timedelta(seconds=20), "expires in less than a minute"),
    (timedelta(days=180), "expires in 180 days"),
    (timedelta(days=3), "expires in 72 hours"),
    (timedelta(days=3, hours=1), "expires in 3 days"),
    (-timedelta(hours=5), "expired 5 hours ago"),
    (-timedelta(days=10), "expired 10 days ago"),
])
def test_expiry_in_words(left: timedelta, words: str) -> None:
    """Time left rounded down (never more than there is), then the UTC instant."""
    at = NOW + left
    assert expiry_words(at, NOW) == f"{words}, {utc_words(at)}"


def test_utc_words() -> None:
    """Day, month name, year, hours and minutes: no ISO, no microseconds, no locale."""
    assert utc_words(datetime(2026, 12, 3, 23, 35, 59, 999, tzinfo=UTC)) == \
        "3 Dec 2026 23:35 UTC"
    assert utc_words(datetime(2026, 1, 9, 4, 5, tzinfo=UTC) + timedelta(hours=0)) == \
        "9 Jan 2026 04:05 UTC"


@pytest.mark.parametrize(("address", "masked"), [
    ("jane@example.test", "j***@example.test"),
    ("j@example.test", "j***@example.test"),
    ("Quentin.Zyx@Mail.Example.test", "Q***@Mail.Example.test"),
    ("no-at-sign", "***"),
    ("@example.test", "***@example.test"),
])
def test_mask_email(address: str, masked: str) -> None:
    """The first character of the local part, then *** and the domain."""
    assert mask_email(address) == masked
