"""Services a run needs in-process (the embedded CA and mail server of ``ca=embedded``).

``start_services`` looks at a pipeline's inputs; when a pipeline has an input ``ca`` whose
value is ``embedded`` (given or by default), it starts the built-in CA and mail server on
loopback for as long as the command runs, and substitutes their addresses for the inputs
``ca`` and ``maildir`` (when that is ``embedded`` too). A resumed run asks for the same
ports, recorded in the state directory, so links in mail already sent still work.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping

from engine.spec import PipelineSpec

EMBEDDED = "embedded"


def wants_embedded(spec: PipelineSpec, given: Mapping[str, Any]) -> bool:
    if "ca" not in spec.inputs:
        return False
    value = given.get("ca", spec.inputs["ca"].default)
    return value == EMBEDDED


def start_services(spec: PipelineSpec, given: dict[str, Any], state_dir: Path,
                   stack: ExitStack) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start what the run needs; returns (services for steps, inputs with addresses)."""
    services: dict[str, Any] = {}
    embedded_url = None
    try:
        from ca.embedded import find_embedded, start_embedded
    except ImportError:
        return services, given
    if wants_embedded(spec, given):
        emb = start_embedded(state_dir, given, spec, stack)
    else:
        # a resumed run whose inputs name the embedded CA's recorded address
        emb = find_embedded(state_dir, given, spec, stack)
    if emb is not None:
        embedded_url = emb.ca_url
        services["embedded"] = emb
        given = dict(given)
        given["ca"] = embedded_url
        if "maildir" in spec.inputs and given.get(
                "maildir", spec.inputs["maildir"].default) in (EMBEDDED, None):
            given["maildir"] = str(emb.maildir)
    return services, given
