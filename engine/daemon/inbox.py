"""The daemon's folders: pipelines (hot reload) and the inbox (drop a file, start a run).

**Pipelines** (``--pipelines DIR``): every ``*.yaml`` there is validated
(:func:`engine.loader.load_pipeline`) on start, on a change (inotify) and on SIGHUP. A
valid file becomes the version of its pipeline name used for *new* runs; running runs keep
the version they were started with (the store pins them by hash). An invalid edit is logged
(``pipeline_invalid`` with every problem's ``file:line:col``) and the last good version
stays in force. A name not found there falls back to the bundled pipelines.

**Inbox** (``--inbox DIR``): drop (write elsewhere, then rename in) either

* a request, ``*.yaml``/``*.yml``/``*.json``: ``{pipeline: NAME_OR_PATH, inputs: {...},
  run_id: OPTIONAL}``; or
* a CSR, ``*.csr`` (PEM): starts the pipeline ``csr_pipeline`` (config; default
  ``cacert``) with inputs ``csr_inputs`` (config) plus ``domain`` = the CSR's first DNS
  name (SAN, else CN), ``domains`` = all of them (if the pipeline declares that input) and
  ``csr`` = the kept CSR's path ``inbox/done/<run_id>-<name>`` (if it declares ``csr``:
  cacert then signs that CSR as it is, makes no key, and places the certificate and chain
  beside it, ``inbox/done/<run_id>-<stem>.crt`` and ``.chain.pem``).

Every new run's inputs go through ``prepare`` (the daemon's: the configuration file's
defaults, then the providers, so ``ca=embedded`` names the embedded CA) before they are
checked.

The file is first claimed by renaming it into ``inbox/.processing/<run_id>/`` (so a crash
never starts a second run for it: on the next start a claimed file whose run exists goes
to ``done``, otherwise its run is started then), then the run is started, then the file is
moved to ``inbox/done/<run_id>-<name>``. A file that cannot start a run goes to
``inbox/failed/<name>`` with ``<name>.error`` saying why. Files are handled in the main
loop (the engine is single-threaded); the watcher only notes their names and wakes it. A
file renamed in or closed after writing is handled at once; one only seen created, at the
next sweep (each second).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from certwright.engine.daemon.requestfile import csr_names, parse_request
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.run.naming import check_run_id, new_run_id
from certwright.errors import CertwrightError, InputError, SpecError

log = structlog.get_logger("certwright.daemon")

REQUEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_REQUEST = 64 * 1024
QUIET = 0.25  # seconds without an event in the pipelines folder before it is reloaded
SETTLE = 2.0  # seconds a file must be unchanged before a sweep takes it without an event

StartRun = Callable[[PipelineSpec, Mapping[str, Any], str, list[str]], str]
Prepare = Callable[[PipelineSpec, dict[str, Any]], dict[str, Any]]


class PipelineCatalog:
    """The current valid version of each pipeline in a folder (plus the bundled ones)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder).resolve() if folder else None
        self._by_file: dict[str, PipelineSpec] = {}
        self.dirty = threading.Event()
        self.last_change = 0.0  # monotonic time of the last event in the folder
        self.errors: dict[str, str] = {}  # file -> last problem text
        # pipelines found by name or path (bundled, or a file): parsed once while the
        # file's (mtime, size) stand; this is asked for every request and finished run
        self._found: dict[str, tuple[tuple[int, int], PipelineSpec]] = {}

    def settled(self, now: float) -> bool:
        """Dirty, and no event for :data:`QUIET` seconds: an editor writing a file in place
        (truncate, then write) is not caught half way (an empty or cut-off pipeline)."""
        return self.dirty.is_set() and now - self.last_change >= QUIET

    def reload(self) -> list[str]:
        """Re-validate every file; returns the names (re)loaded. Never raises for a file."""
        from certwright.engine.model.loader import load_pipeline

        self.dirty.clear()
        if self.folder is None or not self.folder.is_dir():
            return []
        changed = []
        seen = set()
        for path in sorted(self.folder.glob("*.yaml")):
            key = str(path)
            seen.add(key)
            try:
                spec = load_pipeline(path)
            except SpecError as exc:
                if self.errors.get(key) != str(exc):
                    log.error("pipeline_invalid", file=key, problems=str(exc),
                              kept=self._by_file[key].hash[:12] if key in self._by_file else None)
                self.errors[key] = str(exc)
                continue
            except CertwrightError as exc:
                log.error("pipeline_invalid", file=key, problems=str(exc))
                self.errors[key] = str(exc)
                continue
            self.errors.pop(key, None)
            old = self._by_file.get(key)
            if old is None or old.hash != spec.hash:
                self._by_file[key] = spec
                changed.append(spec.name)
                log.info("pipeline_loaded", file=key, pipeline=spec.name,
                         version=spec.hash[:12], previous=old.hash[:12] if old else None)
        for key in set(self._by_file) - seen:
            log.info("pipeline_removed", file=key, pipeline=self._by_file.pop(key).name)
        return changed

    def find(self, name_or_path: str) -> PipelineSpec:
        """The pipeline for new runs: from the folder by name, else a file, else bundled.

        Raises SpecError/CertwrightError when it cannot be found or is invalid.
        """
        for spec in self._by_file.values():
            if spec.name == name_or_path:
                return spec
        from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
        path = resolve_pipeline_path(name_or_path)
        try:
            st = os.stat(path)
        except OSError:
            return load_pipeline(path)  # says what is wrong with it
        stamp = (st.st_mtime_ns, st.st_size)
        known = self._found.get(str(path))
        if known is not None and known[0] == stamp:
            return known[1]
        spec = load_pipeline(path)
        self._found[str(path)] = (stamp, spec)
        return spec


class _Handler(FileSystemEventHandler):
    def __init__(self, on_name: Callable[[str, str], None]) -> None:
        self.on_name = on_name

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        self.on_name(str(path.decode() if isinstance(path, bytes) else path), event.event_type)


def catalog_handler(catalog: PipelineCatalog, wake: Callable[[], None]) -> FileSystemEventHandler:
    """A watchdog handler marking ``catalog`` dirty on changes to ``*.yaml``."""
    def noted(path: str, kind: str) -> None:
        if path.endswith(".yaml"):
            catalog.last_change = time.monotonic()
            catalog.dirty.set()
            wake()
    return _Handler(noted)


class Inbox:
    """Starts runs from files dropped into ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path, catalog: PipelineCatalog, start: StartRun,
                 run_exists: Callable[[str], bool], *, csr_pipeline: str = "cacert",
                 csr_inputs: Mapping[str, Any] | None = None,
                 prepare: Prepare | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.catalog = catalog
        self._start = start
        self._exists = run_exists
        self.csr_pipeline = csr_pipeline
        self.csr_inputs = dict(csr_inputs or {})
        self._prepare = prepare  # given inputs -> as a run gets them (defaults, providers)
        self._ready: set[str] = set()  # renamed in or closed after writing: whole files
        self._created: set[str] = set()  # created, perhaps still being written
        self._lock = threading.Lock()
        for sub in ("done", "failed", ".processing"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def handler(self, wake: Callable[[], None]) -> FileSystemEventHandler:
        def noted(path: str, kind: str) -> None:
            p = Path(path)
            if p.parent == self.folder and kind in ("closed", "moved", "created"):
                with self._lock:
                    (self._created if kind == "created" else self._ready).add(p.name)
                wake()
        return _Handler(noted)

    def watch(self, observer: Any, inotify: Any, wake: Callable[[], None]) -> None:
        """Watch the folder. With ``inotify`` (:class:`mail.inotify.NewFileWatcher`), whole
        files (renamed in, or closed after writing) are noted at once; watchdog's
        ``observer`` reports a file renamed in from another folder only as created, which
        waits for the sweep."""
        observer.schedule(self.handler(wake), str(self.folder))
        if inotify is None:
            return
        from certwright.mail.inotify import WHOLE

        def whole(name: str | None) -> None:
            if name is not None:  # None: the kernel's queue overflowed; the sweep rescans
                with self._lock:
                    self._ready.add(name)
            wake()
        inotify.watch(str(self.folder), whole, WHOLE)

    def pending(self) -> bool:
        """Whether a whole file was noted since the last :meth:`process`: the daemon's loop
        handles it at once, not at its next sweep (a second later)."""
        return bool(self._ready)

    def recover(self) -> None:
        """Finish files claimed before a crash (see the module docstring)."""
        for claim in sorted((self.folder / ".processing").iterdir()):
            files = [f for f in claim.iterdir() if f.is_file()] if claim.is_dir() else []
            if not files:  # killed between the claim and the move: the file is still in
                with contextlib.suppress(OSError):  # the inbox, and is handled anew
                    claim.rmdir()
                continue
            if self._exists(claim.name):
                self._move(files[0], self.folder / "done" / f"{claim.name}-{files[0].name}")
                log.info("inbox_recovered", run_id=claim.name, file=files[0].name)
            else:
                self._handle(files[0], claim.name)
            with contextlib.suppress(OSError):
                claim.rmdir()

    def process(self, sweep: bool = False) -> int:
        """Handle the whole files noted by the watcher; with ``sweep``, also the ones only
        seen created and any file left unchanged for :data:`SETTLE` seconds."""
        with self._lock:
            names, self._ready = self._ready, set()
            if sweep:
                names |= self._created
                self._created = set()
        if sweep:
            now = time.time()
            for p in self.folder.iterdir():
                try:
                    if p.is_file() and now - p.stat().st_mtime >= SETTLE:
                        names.add(p.name)
                except FileNotFoundError:
                    continue
        n = 0
        for name in sorted(names):
            path = self.folder / name
            if name.startswith(".") or not path.is_file() or path.is_symlink():
                continue
            self._handle(path, None)
            n += 1
        return n

    def _handle(self, path: Path, claimed_id: str | None) -> None:
        name = path.name
        try:
            spec, inputs, run_id, secret = self._request(path, claimed_id)
            if claimed_id is None:
                claim = self.folder / ".processing" / run_id
                try:
                    claim.mkdir(mode=0o700)
                except FileExistsError:  # left empty by a crash before the move: ours
                    if any(claim.iterdir()):
                        raise
                path = self._move(path, claim / name)
            if spec.inputs.get("csr") is not None and name.endswith(".csr"):
                inputs = {**inputs, "csr": str(self.folder / "done" / f"{run_id}-{name}")}
            if self._prepare is not None:
                inputs = self._prepare(spec, inputs)
            from certwright.engine.model.inputs import coerce_inputs
            values = coerce_inputs(spec, inputs)
            self._start(spec, values, run_id, secret)
        except (CertwrightError, OSError, ValueError) as exc:
            reason = (str(exc) if isinstance(exc, CertwrightError)
                      else f"{type(exc).__name__}: {exc}")
            log.warning("inbox_refused", file=name, reason=reason.splitlines()[0][:300])
            self._fail(path, name, reason)
            return
        self._move(path, self.folder / "done" / f"{run_id}-{name}")
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        log.info("inbox_started", file=name, run_id=run_id, pipeline=spec.name)

    def _request(self, path: Path, claimed_id: str | None
                 ) -> tuple[PipelineSpec, dict[str, Any], str, list[str]]:
        raw = path.read_bytes()[:MAX_REQUEST + 1]
        if len(raw) > MAX_REQUEST:
            raise InputError(f"request file larger than {MAX_REQUEST} bytes")
        if path.suffix == ".csr":
            spec = self.catalog.find(self.csr_pipeline)
            names = csr_names(raw)
            inputs: dict[str, Any] = {**self.csr_inputs, "domain": names[0]}
            if "domains" in spec.inputs:
                inputs["domains"] = ",".join(names)
        elif path.suffix in REQUEST_SUFFIXES:
            data = parse_request(raw, str(path))
            spec = self.catalog.find(str(data["pipeline"]))
            inputs = dict(data.get("inputs") or {})
            if claimed_id is None and data.get("run_id"):
                claimed_id = check_run_id(str(data["run_id"]))
        else:
            raise InputError(f"not a request ({', '.join(REQUEST_SUFFIXES)}) or a CSR (.csr)")
        run_id = claimed_id or new_run_id(spec.name)
        if (claimed_id is not None and self._exists(run_id)
                and path.parent.parent.name != ".processing"):
            raise InputError(f"a run with id {run_id!r} exists already")
        secret = [n for n, i in spec.inputs.items() if i.secret]
        return spec, inputs, run_id, secret

    def _fail(self, path: Path, name: str, reason: str) -> None:
        target = self.folder / "failed" / name
        if target.exists():
            target = target.with_name(f"{name}.{int(time.time() * 1000)}")
        try:
            self._move(path, target)
        except FileNotFoundError:
            return
        err = target.with_name(target.name + ".error")
        err.write_text(reason.rstrip() + "\n")
        with contextlib.suppress(OSError):
            path.parent.rmdir() if path.parent.parent.name == ".processing" else None

    @staticmethod
    def _move(src: Path, dst: Path) -> Path:
        os.replace(src, dst)
        return dst
