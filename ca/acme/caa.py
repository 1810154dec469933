"""CAA (RFC 8659): may this CA issue for a name? :func:`check_caa`.

The relevant record set is the CAA set at the name, else at its parent, and so on up to
the top-level domain (section 3: tree climbing; the first non-empty set counts). In it:

* a property with the critical flag (128) that the CA does not know refuses issuance;
* for a wildcard name, ``issuewild`` properties decide when there are any, else
  ``issue``; for any other name, ``issue``;
* with none of those properties the set permits anyone; otherwise one of them must name
  one of the CA's identities (``acme_caa_identities``, the directory's
  ``caaIdentities``); ``;`` (no issuer) permits no one.

A lookup that fails (not a missing record: a timeout, SERVFAIL) refuses issuance, as the
RFC requires. The check runs at finalize, i.e. at issuance (BR 3.2.2.8: within 8 hours
before it); ``acme_caa: false`` turns it off (a private PKI whose DNS has no CAA and
cannot answer).
"""
from __future__ import annotations

from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.validate import Resolver

KNOWN = {"issue", "issuewild", "iodef", "contactemail", "contactphone", "issuemail",
         "issuevmc"}


def _issuer(value: str) -> str:
    """The issuer domain of an issue/issuewild value (before any parameters)."""
    return value.split(";", 1)[0].strip().lower().rstrip(".")


def relevant_set(name: str, resolver: Resolver) -> list[tuple[int, str, str]]:
    """The CAA records that govern ``name`` (empty when no domain above it has any)."""
    labels = name.removeprefix("*.").split(".")
    for i in range(len(labels)):
        found = resolver.caa(".".join(labels[i:]))
        if found:
            return found
    return []


def check_caa(name: str, *, resolver: Resolver, identities: list[str]) -> AcmeProblem | None:
    """None when CAA lets this CA issue for ``name``; else the ``caa`` problem naming it."""
    try:
        records = relevant_set(name, resolver)
    except AcmeProblem as exc:
        return AcmeProblem("dns", exc.detail, identifier=name)
    mine = {i.lower().rstrip(".") for i in identities}
    for flags, tag, _ in records:
        if flags & 128 and tag.lower() not in KNOWN:
            return AcmeProblem("caa", f"CAA for {name} has a critical property {tag!r} "
                               "this CA does not understand", identifier=name)
    wild = name.startswith("*.")
    props = [(tag.lower(), value) for _, tag, value in records]
    chosen = [v for t, v in props if t == "issuewild"] if wild else []
    if not chosen:
        chosen = [v for t, v in props if t == "issue"]
    if not chosen or any(_issuer(v) in mine for v in chosen):
        return None
    named = sorted({_issuer(v) or "no one" for v in chosen})
    return AcmeProblem("caa", f"CAA for {name} lets {', '.join(named)} issue, not this CA "
                       f"({', '.join(sorted(mine)) or 'no CAA identity set'})",
                       identifier=name)
