"""Hosts: which steps of a run must run on the run's host, and what this host is called.

A run has a host (``RunRecord.host``), recorded when it is made: ``--set host=NAME`` (or a
pipeline's own ``host`` input), else the host where it was started (:func:`local_host`).
A step class that touches the machine it runs on says ``host_bound = True``: the key
files, the CSR made from that key, installing, reloading the server, checking the TLS it
serves. Every other step (CA and ACME calls, mail waits, timers) runs on any host.

:class:`HostRule` is the engine's check before it starts a step: a host-bound step of a
run whose host is not the engine's is not started. The run parks waiting for its host
(a ``host_awaited`` journal entry sets ``wants_host``; the run stays ``running``, its
lease or run lock is let go) and an engine of that host takes it: daemons claim free runs
with ``wants_host IS NULL OR wants_host = <their host>``, and an engine loads only such
runs (``Store.run_ids(..., host=)``). Starting the step clears ``wants_host``;
``certwright move RUN --host H`` changes the run's host (a ``moved`` entry).

An engine without a host (``EngineOptions.host`` None: tests, embedders, the dry run) and a
run without one (made before hosts existed: ``""``) start every step anywhere.

Hazards: names are compared as written, lower-cased, never resolved: ``web1`` and
``web1.example.org`` are two hosts, so give every daemon and run the same spelling. Files
a step wrote on one host are not there on another: what the run made (CSR, certificate,
and the private key when the store has a store key) is kept in the store and put back
by the step that needs it (``steps._kept``); without a store key a key stays on its host.
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping

from certwright.engine.model.spec import StepSpec
from certwright.engine.plugins.registry import Registry
from certwright.errors import InputError
from certwright.state.records import RunRecord

__all__ = ["HOST_ENV", "HostRule", "check_host", "host_bound", "local_host"]

HOST_ENV = "CERTWRIGHT_HOST"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?")


def check_host(value: object, where: str) -> str:
    """``value`` as a host name (stripped, lower-cased); InputError naming ``where`` when
    it is not one (letters, digits, dots, dashes and underscores, up to 253)."""
    name = str(value).strip().lower() if value is not None else ""
    if not _NAME.fullmatch(name):
        raise InputError(f"{where}: {value!r} is not a host name (letters, digits, '.', '-' "
                         f"and '_', starting and ending with a letter or digit)")
    return name


def local_host(configured: object = None, env: Mapping[str, str] | None = None) -> str:
    """This host's name for certwright: ``CERTWRIGHT_HOST``, else ``configured`` (the
    configuration file's ``host:``), else the machine's host name."""
    env = os.environ if env is None else env
    if env.get(HOST_ENV):
        return check_host(env[HOST_ENV], HOST_ENV)
    if configured:
        return check_host(configured, "host (configuration)")
    return check_host(socket.gethostname() or "localhost", "the machine's host name")


def host_bound(cls: type) -> bool:
    """Whether steps of class ``cls`` must run on their run's host (``host_bound``)."""
    return bool(getattr(cls, "host_bound", False))


class HostRule:
    """Whether a step may start on this engine's ``host`` (see the module)."""

    def __init__(self, host: str | None, registry: Registry) -> None:
        self.host = host
        self._registry = registry
        self._bound: dict[str, bool] = {}

    def bound(self, step_name: str) -> bool:
        """Whether the step of that registry name is host-bound (unknown: no)."""
        found = self._bound.get(step_name)
        if found is None:
            try:
                found = host_bound(type(self._registry.get(step_name)))
            except KeyError:
                found = False
            self._bound[step_name] = found
        return found

    def wanted(self, run: RunRecord, step: StepSpec) -> str | None:
        """The host ``run`` must wait for before ``step`` starts; None: start it here."""
        if self.host is None or not run.host or run.host == self.host:
            return None
        return run.host if self.bound(step.name) else None
