"""Entry-point discovery for the plugin groups (steps, providers), once per process.

:func:`discover` lists a group's entry points and tells the built-in ones (from the
``certwright`` distribution itself) from those of other distributions (plugins). It loads
nothing: an entry point's module is imported only when its step or provider is used.

Hazards:

* Discovery reads every installed distribution's metadata (a few ms for a hundred of them),
  so it is cached, keyed on the group and ``sys.path``. The cache is a function-level one
  (``functools.lru_cache``), not an object's: the loader, the runner and the CLI each build
  their own :class:`Registry`, and they must not each pay for the scan. Keying on
  ``sys.path`` keeps it right when a test or an embedder puts a plugin's folder on the path;
  a package installed into the running process's site-packages is seen by the next process
  (as ``importlib`` caches do).
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
from importlib.metadata import EntryPoint, entry_points
from typing import NamedTuple

DISTRIBUTION = "certwright"  # whose entry points are the built-ins


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
    """The entry points of ``group``, sorted by name (cached per ``sys.path``; see above)."""
    return _discover(group, tuple(sys.path))


@functools.lru_cache(maxsize=16)
def _discover(group: str, path: tuple[str, ...]) -> tuple[Found, ...]:
    del path  # only the cache key: entry_points() reads sys.path itself
    out = []
    for ep in entry_points(group=group):
        dist_name = _dist_name(ep)
        out.append(Found(ep.name, ep.value, dist_name,
                         _canonical(dist_name) == DISTRIBUTION, ep))
    return tuple(sorted(out, key=lambda f: (not f.builtin, f.name, f.dist)))


def _dist_name(ep: EntryPoint) -> str:
    """The name of the distribution ``ep`` comes from. A folder-based distribution knows it
    from its folder's name (``certwright-0.1.0.dist-info``, ``certwright.egg-info``), which
    ``importlib.metadata`` itself uses to tell distributions apart; ``dist.name`` would parse
    the METADATA file with the email parser instead (about 1 ms at start-up, for nothing)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?"
    return str(getattr(dist, "_normalized_name", None) or dist.name)
