"""What a file dropped in the daemon's inbox asks for (:mod:`engine.daemon.inbox`).

* A request (``.json``, ``.yaml``, ``.yml``): ``{pipeline, inputs, run_id}``, read by the
  hostile-input-proof YAML reader (:mod:`engine.model.yamlsafe`: limits, duplicate keys,
  every problem located). A ``.json`` file is first read by the json module, a hundred
  times quicker, and that answer is used only where it is what the YAML reader would give;
  in every other case (a syntax error, a duplicate key, NaN, a number YAML 1.1 reads as
  text, nesting past the YAML limit) the YAML reader answers or says what is wrong.
* A CSR (``.csr``, PEM): its DNS names, each checked.

Each raises :class:`InputError` (or :class:`SpecError`, located) saying what is wrong.
"""
from __future__ import annotations

import json
import re
from typing import Any

from certwright.errors import InputError

__all__ = ["csr_names", "parse_request", "plain_json"]


def parse_request(raw: bytes, where: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("request file is not UTF-8 text") from None
    data = plain_json(text) if where.endswith(".json") else None
    if data is None:
        from certwright.engine.model.yamlsafe import load_yaml
        data = load_yaml(text, where).value
    if not isinstance(data, dict):
        raise InputError("a request is a mapping: {pipeline: NAME, inputs: {...}, run_id: ...}")
    unknown = sorted(set(data) - {"pipeline", "inputs", "run_id"})
    if unknown:
        raise InputError(f"unknown key(s) in request: {', '.join(map(str, unknown))} "
                         f"(known: pipeline, inputs, run_id)")
    if not isinstance(data.get("pipeline"), str) or not data["pipeline"]:
        raise InputError("request: 'pipeline' (a name or a path) is required")
    if data.get("inputs") is not None and not isinstance(data["inputs"], dict):
        raise InputError("request: 'inputs' must be a mapping")
    return data


class _NotPlain(Exception):
    """The JSON reader must not answer: the YAML reader reads it otherwise, or refuses."""


# the numbers YAML 1.1 reads as floats (``1e3`` is text to it); ints read alike
_YAML_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?")


def plain_json(text: str) -> Any:
    """A ``.json`` request as the YAML reader would give it, read by the json module (a
    hundred times quicker); None where the YAML reader must answer: a syntax error, a
    duplicate key, NaN, a number YAML reads as text, or nesting past its depth limit (it
    then says what is wrong, and where)."""
    from certwright.engine.model.yamlsafe import MAX_DEPTH

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise _NotPlain
        return out

    def number(s: str) -> float:
        if not _YAML_FLOAT.fullmatch(s):
            raise _NotPlain
        return float(s)

    def refuse(_: str) -> Any:
        raise _NotPlain
    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_float=number,
                          parse_constant=refuse)
    except (_NotPlain, ValueError, RecursionError):
        return None
    level, depth = [data], 0
    while level:  # breadth first: no recursion on a deep document
        depth += 1
        if depth > MAX_DEPTH:
            return None
        level = [v for c in level if isinstance(c, (dict, list))
                 for v in (c.values() if isinstance(c, dict) else c)]
    return data


def csr_names(pem: bytes) -> list[str]:
    """DNS names of a PEM CSR (SAN first, else CN), each checked; InputError if none/bad."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from certwright.engine.model.inputs import check_hostname
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise InputError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise InputError("the CSR's signature is not valid")
    try:
        names = list(csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names:
        raise InputError("the CSR names no DNS name (neither SAN nor CN)")
    try:
        return [check_hostname(n) for n in names]
    except ValueError as exc:
        raise InputError(f"the CSR names a bad DNS name: {exc}") from None
