"""The built-in CA's provider: the embedded CA and mail server for runs with ``ca=embedded``.

Registered under the entry-point group ``certwright.providers`` as ``embedded``. When a
pipeline has an input ``ca`` whose value is ``embedded`` (given or by default), it starts
the built-in CA and mail server on loopback (:mod:`certwright.ca.embedded`) for as long as
the command runs, and substitutes their addresses for the inputs ``ca`` and ``maildir``
(when that is ``embedded`` or unset). A resumed run, whose pinned ``ca`` is the address
recorded in ``<state_dir>/embedded/ports.json``, gets the same ports back, so links in
mail already sent still work. While ``daemon --embedded`` serves the store, a new run is
handed the daemon's CA and Maildir instead of starting its own.

Hazard: this module is imported before every foreground run, so it stays small: the CA
(about 0.3 s of imports) is imported only when a run involves it, decided from the inputs
and whether the ports file exists.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwright.ca.embedded_paths import ports_file
from certwright.engine.plugins.providers import Provision

if TYPE_CHECKING:
    from certwright.ca.embedded import Embedded
    from certwright.engine.model.spec import PipelineSpec

EMBEDDED = "embedded"  # the value of the `ca` (and `maildir`) input that asks for us
SERVICE = "embedded"   # the name of the Embedded record in the steps' ctx.services


def wants_embedded(spec: PipelineSpec, given: Mapping[str, Any]) -> bool:
    """Whether a run of ``spec`` with inputs ``given`` asks for the embedded CA."""
    if "ca" not in spec.inputs:
        return False
    value = given.get("ca", spec.inputs["ca"].default)
    return bool(value == EMBEDDED)


class EmbeddedServices:
    """Starts (or finds) the embedded CA and mail server; see the module's docstring."""

    name = "embedded"

    def provide(self, spec: PipelineSpec, givens: Sequence[Mapping[str, Any]],
                state_dir: Path, stack: ExitStack) -> Provision | None:
        """The embedded services and the runs' inputs pointing at them, or None when no run
        involves them. Raises CertwrightError when the recorded ports are taken."""
        if not givens:
            return None
        wanted = wants_embedded(spec, givens[0])
        if not wanted and not ports_file(state_dir).exists():
            return None  # no embedded CA involved: do not even import it (0.3 s)
        try:
            from certwright.ca import embedded
        except ImportError:
            return None
        emb: Embedded | None
        if wanted:
            emb = _daemons(state_dir)
            if emb is None:
                defaults = {k: i.default for k, i in spec.inputs.items() if i.has_default}
                domains: set[str] = set()
                for given in givens:
                    domains |= embedded.domains_of({**defaults, **given})
                emb = embedded.start(state_dir, domains, stack)
        else:
            # a resumed run whose inputs name the embedded CA's recorded address
            emb = embedded.find_embedded(state_dir, givens[0], spec, stack)
        if emb is None:
            return None
        return Provision(services={SERVICE: emb},
                         inputs=[_pointed_at(spec, given, emb) for given in givens],
                         maildirs=(emb.maildir,))


def serve_embedded(state_dir: Path, domains: Sequence[str], stack: ExitStack,
                   also_accept: Callable[[str], bool] | None = None) -> Provision:
    """For ``daemon --embedded``: start the services for ``domains`` (and those recorded,
    and those ``also_accept`` says yes to) until ``stack`` closes; the Provision has no
    inputs (the daemon points each run it starts at them through :meth:`provide`)."""
    from certwright.ca.embedded import start
    emb = start(state_dir, domains, stack, also_accept)
    return Provision(services={SERVICE: emb}, inputs=[], maildirs=(emb.maildir,))


def _daemons(state_dir: Path) -> Embedded | None:
    """The daemon's services when ``daemon --embedded`` holds the store, else None."""
    from certwright.ca.embedded import recorded
    from certwright.state.locks import daemon_lock
    if not daemon_lock(state_dir).holder():
        return None
    return recorded(state_dir)


def _pointed_at(spec: PipelineSpec, given: Mapping[str, Any], emb: Embedded) -> dict[str, Any]:
    values = dict(given)
    values["ca"] = emb.ca_url
    if "maildir" in spec.inputs and values.get(
            "maildir", spec.inputs["maildir"].default) in (EMBEDDED, None):
        values["maildir"] = str(emb.maildir)
    return values
