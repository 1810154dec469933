"""The files a run makes, kept in the store, and put back where a later step needs them.

A run moves between daemons and hosts (``certwright move``, a daemon that died, a CA step
taken by another host's daemon), and its files do not move with it: ``key.generate`` and
``csr.generate`` write into the run's folder on the host that ran them, ``ca.sign`` into
the folder of whichever daemon signed. So the steps that make those files hand them to
the engine (:func:`keep`, returned as ``Done.kept``), which keeps them in the store in the
same transaction as the step's result (``state.artefacts``); and the steps that read
them (:func:`restore`, :func:`restored`) get them back from the store when the path they
were given is not on this host.

Where a file is put back: the same place inside this host's folder of the run when it was
inside the run's folder where it was made (``rel``), else the very path it was made at. A
private key goes into a 0700 folder as a 0600 file; the rest 0644. A file already there is
used as it is (it is this host's). A private key is kept only when the store has a key to
seal it with (``StepContext.sealing``); without one it stays on the host that made it,
and a step needing it elsewhere fails saying so.

Hazards: a restored key is a copy of the key on the other host; the installed one is the
same key, which is the point (the certificate was signed for it).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from certwright.atomic import write_atomic
from certwright.engine.plugins.step import StepContext
from certwright.errors import PermanentError, StoreError
from certwright.state.artefacts import Artefact

__all__ = ["keep", "restore", "restored"]


def keep(ctx: StepContext, path: Path | str, kind: str,
         data: bytes | None = None) -> tuple[Artefact, ...]:
    """What to return as ``Done.kept`` for the file ``path`` (``data``: its content, read
    from ``path`` when None): empty when there is no store to keep it in (a step called
    without an engine), or it is a private key and the store has no key to seal it."""
    if ctx.artefact is None or (kind == "key" and not ctx.sealing):
        return ()
    where = Path(path)
    if data is None:
        try:
            data = where.read_bytes()
        except OSError as exc:
            raise PermanentError(f"{ctx.step_id}: cannot read {where} to keep it in the "
                                 f"store: {exc.strerror}") from exc
    try:
        rel = str(where.relative_to(ctx.run_dir))
    except ValueError:
        rel = ""
    return (Artefact(run_id=ctx.run_id, name=str(where), kind=kind, data=data, rel=rel),)


def restore(ctx: StepContext, path_value: Any, kind: str) -> Path:
    """Where the file a step was given as ``path_value`` is on this host: the path itself
    when it is here (or nothing is kept of it: the step then fails reading it), else the
    copy written from the store. PermanentError when the store cannot open it."""
    path = Path(str(path_value))
    if ctx.artefact is None or os.path.lexists(path):
        return path
    try:
        art = ctx.artefact(str(path))
    except StoreError as exc:
        raise PermanentError(f"{ctx.step_id}: {path} is not on this host, and the store's "
                             f"copy cannot be read: {exc}") from exc
    if art is None:
        if kind == "key" and not ctx.sealing:
            raise PermanentError(
                f"{ctx.step_id}: the private key {path} is not on this host: without a store "
                f"key (store_key: in the configuration) keys stay on the host that made "
                f"them; run this step there (certwright move RUN --host HOST)")
        return path
    target = ctx.run_dir / art.rel if art.rel else path
    if _holds(target, art.data):
        return target
    private = kind == "key"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o755)
    if private:
        target.parent.chmod(0o700)
    try:
        write_atomic(target, art.data, 0o600 if private else 0o644, follow_folder=not private)
    except OSError as exc:
        raise PermanentError(f"{ctx.step_id}: cannot write {target} from the store's "
                             f"copy of {path}: {exc.strerror}") from exc
    ctx.log.info("artefact_restored", name=str(path), to=str(target), kind=kind,
                 sha256=art.sha256)
    return target


def restored(ctx: StepContext, params: Mapping[str, Any],
             kinds: Iterable[tuple[str, str]]) -> Mapping[str, Any]:
    """``params`` with each file parameter of ``kinds`` ((param, kind), e.g. ("key",
    "key")) that is set replaced by where it is on this host (:func:`restore`)."""
    out = dict(params)
    for param, kind in kinds:
        if out.get(param):
            out[param] = str(restore(ctx, out[param], kind))
    return out


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False
