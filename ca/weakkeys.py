"""Weak-key tests for subscriber RSA keys: ROCA fingerprint and Fermat factorisation.

* ROCA (CVE-2017-15361): Infineon's RSALib built primes as ``k*M + (65537^a mod M)`` with
  ``M`` a primorial, so a vulnerable modulus ``N`` is, for every small prime ``p`` of the
  published list, congruent mod ``p`` to an element of the subgroup of ``Z_p^*`` generated
  by 65537. A random modulus passes all 38 tests with probability about 2^-154 (the
  detector of Nemec et al., https://github.com/crocs-muni/roca, ``detect.py``).
* Fermat: a modulus whose primes are close together, ``|p - q| < ~2 * N^(1/4)``, falls to
  Fermat's method within a few rounds; we try :data:`FERMAT_ROUNDS`.

Debian's weak keys (CVE-2008-0166) are not tested: that needs the blocklists of the
``openssl-blacklist`` package, which neither Debian nor PyPI ships any more.
"""
from __future__ import annotations

from functools import cache
from math import isqrt

FERMAT_ROUNDS = 100
ROCA_GENERATOR = 65537
# The primes of the ROCA fingerprint (detect.py ``primes``).
ROCA_PRIMES: tuple[int, ...] = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83,
    89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)


@cache
def _subgroup(prime: int) -> frozenset[int]:
    """The powers of 65537 modulo ``prime``."""
    g = ROCA_GENERATOR % prime
    seen, x = {1}, g
    while x not in seen:
        seen.add(x)
        x = x * g % prime
    return frozenset(seen)


def roca_vulnerable(modulus: int) -> bool:
    """True when ``modulus`` has the ROCA fingerprint (see module docstring)."""
    return all(modulus % p in _subgroup(p) for p in ROCA_PRIMES)


def fermat_factor(modulus: int, rounds: int = FERMAT_ROUNDS) -> tuple[int, int] | None:
    """Factors ``(p, q)`` of ``modulus`` found by Fermat's method within ``rounds``, or None."""
    if modulus <= 3 or modulus % 2 == 0:
        return None
    a = isqrt(modulus)
    if a * a < modulus:
        a += 1
    for _ in range(rounds):
        b2 = a * a - modulus
        b = isqrt(b2)
        if b * b == b2:
            p, q = a - b, a + b
            return (p, q) if p > 1 else None
        a += 1
    return None
