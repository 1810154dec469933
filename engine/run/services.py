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

from certwright.engine.model.spec import PipelineSpec

EMBEDDED = "embedded"


def wants_embedded(spec: PipelineSpec, given: Mapping[str, Any]) -> bool:
    if "ca" not in spec.inputs:
        return False
    value = given.get("ca", spec.inputs["ca"].default)
    return bool(value == EMBEDDED)


def _daemon_serves_embedded(state_dir: Path) -> bool:
    from certwright.state.locks import daemon_lock
    from certwright.ca.embedded import recorded
    return bool(daemon_lock(state_dir).holder()) and recorded(state_dir) is not None


def start_services(spec: PipelineSpec, given: dict[str, Any], state_dir: Path,
                   stack: ExitStack) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start what the run needs; returns (services for steps, inputs with addresses)."""
    services, [values] = start_services_for(spec, [given], state_dir, stack)
    return services, values


def start_services_for(spec: PipelineSpec, givens: list[dict[str, Any]], state_dir: Path,
                       stack: ExitStack) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """As :func:`start_services`, once for several runs of ``spec`` (all their domains)."""
    services: dict[str, Any] = {}
    emb: Any = None
    recorded_ports = Path(state_dir) / "embedded" / "ports.json"
    if not givens or not (wants_embedded(spec, givens[0]) or recorded_ports.exists()):
        return services, givens  # no embedded CA involved: do not even import it (0.3 s)
    try:
        from certwright.ca.embedded import domains_of, find_embedded, start
    except ImportError:
        return services, givens
    defaults = {k: i.default for k, i in spec.inputs.items() if i.has_default}
    if givens and wants_embedded(spec, givens[0]) and _daemon_serves_embedded(state_dir):
        # `daemon --embedded` holds the ports: hand the run the daemon's CA and Maildir
        from certwright.ca.embedded import recorded
        emb = recorded(state_dir)
    elif givens and wants_embedded(spec, givens[0]):
        domains: set[str] = set()
        for given in givens:
            domains |= domains_of({**defaults, **given})
        emb = start(state_dir, domains, stack)
    else:
        # a resumed run whose inputs name the embedded CA's recorded address
        emb = find_embedded(state_dir, givens[0], spec, stack) if givens else None
    if emb is None:
        return services, givens
    services["embedded"] = emb
    out = []
    for given in givens:
        values = dict(given)
        values["ca"] = emb.ca_url
        if "maildir" in spec.inputs and values.get(
                "maildir", spec.inputs["maildir"].default) in (EMBEDDED, None):
            values["maildir"] = str(emb.maildir)
        out.append(values)
    return services, out
