"""What a run made, kept in the store: its private key, CSR, certificate and chain.

Steps that write such a file hand its content to the engine with their result
(``Done.kept``); the engine writes it with ``Tx.put_artefact`` in the transaction that
records the step, so the store holds exactly the artefacts of the steps it says are done.
A step on another daemon or host that needs the file and does not find it gets it back
from the store (``steps._kept.restore``): a run moves between daemons and hosts without
files, and ``certificates`` answers for every host.

One row per (run, name): ``name`` is the path the step wrote and output (what later steps'
parameters name), ``rel`` that path inside the run's folder ("" outside it). The body (JSON)
holds the kind, the SHA-256 of the content, when it was kept, and the content: sealed with
the store key (:mod:`state.sealing`) when the store has one, else base64 in clear. A
private key is kept only sealed: without a store key :func:`artefact_body` refuses it
(StoreError) and steps do not offer one (``StepContext.sealing``).

A step's state file (kind ``state``: the ACME order's ``acme-order.json``) is kept
under a name that is the same on every host (``steps/acme/kept.py``).

CA account credentials (kind ``account``, sealed only; the ACME account's key too)
belong to no run: they are kept under the run id :data:`SHARED` (``""``) and the name
``account/<id>``, so a daemon on another host logs in to the account a run on this one
joined.

The same module turns secrets into their stored text and back (sealed with a key, JSON in
clear without), for both back-ends.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certwright.errors import StoreError
from certwright.state.sealing import Sealer, is_sealed, open_sealed

__all__ = ["KINDS", "SEALED_ONLY", "SHARED", "Artefact", "artefact_body", "artefact_from_body",
           "secrets_body",
           "secrets_from_body"]

KINDS = ("key", "csr", "cert", "chain", "account", "state")
SEALED_ONLY = ("key", "account")  # private keys, CA account credentials
SHARED = ""  # the run_id of what belongs to no run: CA accounts, used by many runs


@dataclass(frozen=True)
class Artefact:
    """A file a run made, as the store keeps it (``data`` in clear once read)."""

    run_id: str
    name: str        # the path it was written to, as the step output it
    kind: str        # key | csr | cert | chain
    data: bytes
    rel: str = ""    # its path inside the run's folder ("" when outside it)
    sha256: str = ""
    sealed: bool = False
    created: str = ""


def _what(run_id: str, name: str) -> str:
    return f"artefact/{run_id}/{name}"


def artefact_body(art: Artefact, sealer: Sealer | None, created: str) -> str:
    """The stored body of ``art``; StoreError for a kind we do not keep, or a private key
    with no store key to seal it."""
    if art.kind not in KINDS:
        raise StoreError(f"run {art.run_id}: cannot keep a {art.kind!r} ({art.name}); "
                         f"kinds kept: {', '.join(KINDS)}")
    if art.kind in SEALED_ONLY and sealer is None:
        raise StoreError(f"run {art.run_id}: a private {art.kind} is kept in the store only "
                         f"sealed, and no store key is configured ({art.name})")
    data = sealer.seal(art.data, _what(art.run_id, art.name)) if sealer \
        else base64.b64encode(art.data).decode("ascii")
    return json.dumps({"kind": art.kind, "rel": art.rel, "created": created,
                       "sha256": hashlib.sha256(art.data).hexdigest(), "data": data},
                      sort_keys=True, separators=(",", ":"))


def artefact_from_body(run_id: str, name: str, body: str, sealer: Sealer | None) -> Artefact:
    """The artefact a stored body holds, opened; StoreError when it is sealed and cannot
    be opened, or its content does not match its SHA-256."""
    fields = json.loads(body)
    text = str(fields["data"])
    sealed = is_sealed(text)
    data = open_sealed(text, _what(run_id, name), sealer) if sealed else base64.b64decode(text)
    if hashlib.sha256(data).hexdigest() != fields["sha256"]:
        raise StoreError(f"{_what(run_id, name)}: the stored content does not match its "
                         f"SHA-256 (damaged)")
    return Artefact(run_id=run_id, name=name, kind=fields["kind"], data=data,
                    rel=fields.get("rel", ""), sha256=fields["sha256"], sealed=sealed,
                    created=fields.get("created", ""))


def secrets_body(run_id: str, secrets: Mapping[str, Any], sealer: Sealer | None) -> str:
    """The stored text of a run's secrets: sealed with the store key, else JSON."""
    text = json.dumps(secrets)
    return sealer.seal(text.encode(), f"secrets/{run_id}") if sealer else text


def secrets_from_body(run_id: str, body: str, sealer: Sealer | None) -> dict[str, Any]:
    """A run's secrets from their stored text (sealed, or JSON kept before a key was
    configured); StoreError when sealed and the key cannot open them."""
    if is_sealed(body):
        body = open_sealed(body, f"secrets/{run_id}", sealer).decode()
    return dict(json.loads(body))
