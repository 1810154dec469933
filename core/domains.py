"""Domain names as the CA and the engine's inputs see them: one normalisation, and the
public suffixes (`co.uk`, `github.io`) that nobody can own as a whole.

* :func:`normalize_domain` is the one spelling of a domain that every route, store row
  and comparison uses: surrounding spaces off, lower case, one trailing dot (the DNS
  root) off. It does not check the name (``certwright.ca.signer.valid_dns_name`` does).
* :func:`find_public_suffix` tells whether a name is itself a public suffix, from the
  Public Suffix List bundled with the ``publicsuffixlist`` package (both its ICANN and
  its private sections; its wildcard and exception rules apply). No network is used at
  run time: the list is as new as the installed package (its version carries the list's
  date), so upgrading the package is how the list is updated.

Hazard: a TLD the bundled list does not know counts as a public suffix (the list's
implicit ``*`` rule), so ``test`` is one and ``example.test`` is not; a TLD delegated
after the package was built is handled the same way.
"""
from __future__ import annotations

from functools import cache
from typing import Any


def normalize_domain(name: str) -> str:
    """``name`` stripped, lower-cased and without one trailing dot: ``"Example.Test. "``
    is ``"example.test"``. Never raises; an empty result is the caller's to refuse."""
    name = name.strip().lower()
    return name.removesuffix(".")


@cache
def _suffix_list() -> Any:
    """The parsed bundled list (about 50 ms, once per process; read-only afterwards)."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(accept_unknown=True)


def find_public_suffix(name: str) -> str | None:
    """``name`` (normalised) when it is a public suffix, else None.

    ``co.uk``, ``uk``, ``github.io`` and ``foo.kawasaki.jp`` (a wildcard rule) are;
    ``example.co.uk`` and ``city.kawasaki.jp`` (an exception rule) are not. A wildcard
    name is judged by its base: ask for ``name[2:]`` to judge ``*.co.uk``."""
    name = normalize_domain(name)
    if not name:
        return None
    return name if _suffix_list().is_public(name) else None

