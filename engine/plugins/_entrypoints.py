"""Entry-point discovery for the plugin groups (steps, providers), once per process.

:func:`discover` lists a group's entry points and tells the built-in ones (from the
``certwright`` distribution itself) from those of other distributions (plugins). It loads
nothing: an entry point's module is imported only when its step or provider is used.

Hazards:

* Discovery reads every installed distribution's metadata (a few ms for a hundred of them),
  so it is done once for every ``certwright.*`` group and cached, keyed on ``sys.path``.
  The cache is a function-level one (``functools.lru_cache``), not an object's: the loader,
  the runner and the CLI each build their own :class:`Registry`, and the providers are
  loaded apart from them, and none must pay for the scan again. Keying on ``sys.path``
  keeps it right when a test or an embedder puts a plugin's folder on the path; a package
  installed while the process runs is seen by the next process (as ``importlib``'s own
  caches behave).
* When the same distribution is visible twice on ``sys.path`` (a source tree's
  ``certwright.egg-info`` in the current folder, the installed ``dist-info``), the first one
  wins, as in :func:`importlib.metadata.entry_points`; both are written by the same install.
* Without the distribution's metadata (the source tree on ``PYTHONPATH``, not installed)
  there are no built-in entry points at all; callers say so rather than report every step
  as unknown.
"""
from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import NamedTuple

DISTRIBUTION = "certwright"  # whose entry points are the built-ins
NAMESPACE = "certwright."    # the plugin groups discovered (certwright.steps, ...)


class Found(NamedTuple):
    """One entry point of a group: its name, ``module:attr`` target and where it comes from.

    (A NamedTuple rather than a dataclass: building the class costs a fifth, at start-up.)"""

    name: str
    value: str
    dist: str  # the distribution's name (normalised); "?" when unknown
    builtin: bool  # from the certwright distribution itself
    entry_point: EntryPoint


def _canonical(name: str) -> str:
    """PEP 503 normalisation: ``Cert_Wright`` and ``cert-wright`` name one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def discover(group: str) -> tuple[Found, ...]:
    """The entry points of ``group``, the built-in ones first, each part sorted by name
    (cached per ``sys.path``; see above)."""
    return _scan(tuple(sys.path)).get(group, ())


@functools.lru_cache(maxsize=16)
def _scan(path: tuple[str, ...]) -> Mapping[str, tuple[Found, ...]]:
    """Every ``certwright.*`` group at once: one pass over the installed distributions
    serves the steps and the providers (a second pass cost 2 ms more on ``run``)."""
    del path  # only the cache key: entry_points() reads sys.path itself
    everything = entry_points()
    out: dict[str, tuple[Found, ...]] = {}
    for group in sorted(g for g in everything.groups if g.startswith(NAMESPACE)):
        found = [Found(ep.name, ep.value, _dist_name(ep),
                       _canonical(_dist_name(ep)) == DISTRIBUTION, ep)
                 for ep in everything.select(group=group)]
        out[group] = tuple(sorted(found, key=lambda f: (not f.builtin, f.name, f.dist)))
    return out


def _dist_name(ep: EntryPoint) -> str:
    """The name of the distribution ``ep`` comes from. A folder-based distribution knows it
    from its folder's name (``certwright-0.1.0.dist-info``, ``certwright.egg-info``), which
    ``importlib.metadata`` itself uses to tell distributions apart; ``dist.name`` would parse
    the METADATA file with the email parser instead (about 1 ms at start-up, for nothing)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?"
    return str(getattr(dist, "_normalized_name", None) or dist.name)
