"""certwright.domains: one normalisation of a domain, and the bundled public suffixes."""
from __future__ import annotations

import pytest

from certwright.domains import find_public_suffix, normalize_domain


@pytest.mark.parametrize(("given", "expected"), [
    ("Example.Test", "example.test"), ("example.test.", "example.test"),
    ("  victim.test. ", "victim.test"), ("", ""), (".", ""),
])
def test_normalize_domain(given: str, expected: str) -> None:
    """Spaces off, lower case, one trailing dot off."""
    assert normalize_domain(given) == expected


@pytest.mark.parametrize("name", ["co.uk", "uk", "CO.UK.", "github.io", "com",
                                  "foo.kawasaki.jp", "test"])
def test_public_suffixes(name: str) -> None:
    """TLDs, registry suffixes, private-section suffixes and wildcard rules are public
    suffixes (an unknown TLD too, by the list's implicit rule)."""
    assert find_public_suffix(name) == normalize_domain(name)


@pytest.mark.parametrize("name", ["example.co.uk", "a.github.io", "city.kawasaki.jp",
                                  "example.test", "www.example.com", ""])
def test_not_public_suffixes(name: str) -> None:
    """Names under a suffix, and exception rules, are not."""
    assert find_public_suffix(name) is None
