"""The revocation reasons ``certwright revoke`` takes: RFC 5280's final ones, in any case
and in certbot's spellings; everything else refused with the list."""
from __future__ import annotations

import argparse

import pytest

from certwright.engine.cli.revoke import REASONS, parse_reason


@pytest.mark.parametrize(("given", "canonical"), [
    ("keycompromise", "keyCompromise"), ("KeyCompromise", "keyCompromise"),
    ("key-compromise", "keyCompromise"), ("key_compromise", "keyCompromise"),
    ("cessationofoperation", "cessationOfOperation"), ("SUPERSEDED", "superseded"),
    ("affiliationchanged", "affiliationChanged"), ("privilegeWithdrawn", "privilegeWithdrawn"),
    ("unspecified", "unspecified")])
def test_spellings_map_to_the_rfc_5280_name(given: str, canonical: str) -> None:
    assert parse_reason(given) == canonical


@pytest.mark.parametrize("given", ["certificateHold", "removeFromCRL", "cACompromise",
                                   "aACompromise", "bored", ""])
def test_other_reasons_are_refused_with_the_list(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse_reason(given)
    assert all(name in str(caught.value) for name in REASONS)


def test_the_codes_are_rfc_5280s() -> None:
    assert REASONS == {"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3,
                       "superseded": 4, "cessationOfOperation": 5, "privilegeWithdrawn": 9}
