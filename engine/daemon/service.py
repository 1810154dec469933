"""``certwright daemon``: one process serving many runs, reacting to mail, files and deadlines.

Start-up, in order: the daemon lock (a second daemon on the store is refused, naming the
first one's pid); the store (with its key); the embedded CA and mail server if asked;
``engine.open()`` (timers loaded; running runs driven; overdue deadlines fire on the first
pump); the inbox recovered and scanned; the pipelines folder; each Maildir's ``new/``
watched and scanned; the IMAP sources; unfinished runs' pipelines and every step loaded;
the heartbeat row; the start-up's heap frozen (``warmup``, the command only); the loop.
With ``metrics_listen`` the ``/metrics`` listener starts before the engine opens
(:mod:`engine.daemon.metrics`: a collector that reads the store at each scrape, and an
interceptor that counts what the engine commits).

The loop is ``engine.pump(timeout)``, which blocks until an event arrives or the next timer
is due (one timer heap for every deadline; no thread per run or timer). Watchers (inotify
threads) only translate file events into ``engine.submit(...)`` or note names for the loop;
an inbox file noted whole starts its run at once. Once a second at most the loop does its
housekeeping: unclaimed-mail sweep, the heartbeat, other inbox files, pipeline reloads,
renewals, and every ``sync_interval`` ``engine.sync(adopt=...)`` for runs and timers that
other processes (``certwright run --no-wait``) added.

Signals: SIGTERM/SIGINT stop taking events, let the current pump's transaction commit and
leave: steps still executing stay "started" and run again (same idempotency key) later.
SIGHUP reloads the pipelines folder and the config file (mail sources, inbox and embedded
services are fixed at start: restart for those).

One driver per run: see :mod:`certwright.engine.daemon.locking` (run locks while a run
is active here; ``resume``/``run`` refuse in the foreground while the daemon lock is held).
On PostgreSQL daemons share the runs under leases instead (``leasing``, ``shared``; woken
by each other's LISTEN/NOTIFY notices, ``wakeups``): a pump refused by fencing, or failed
as the server went away, is rolled back and the engine started afresh from the store.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import structlog

from certwright.clock import Clock, clock_from_env
from certwright.engine.daemon.config import DaemonConfig, load_daemon_config, merge_args
from certwright.engine.daemon.filewaits import FileWaits
from certwright.engine.daemon.heartbeat import Heartbeat
from certwright.engine.daemon.inbox import QUIET, Inbox, PipelineCatalog, catalog_handler
from certwright.engine.daemon.locking import RunLocks
from certwright.engine.daemon.maildirpoll import MaildirPoll
from certwright.engine.daemon.mailroute import (
    MaildirSource,
    MailRouter,
    make_observer,
    watched_folders,
)
from certwright.engine.daemon.renew import Renewer
from certwright.engine.daemon.shared import Shared, leases_for
from certwright.engine.daemon.warmup import load_steps, settle
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.step import Wait
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.errors import CertwrightError, InputError
from certwright.events import Event
from certwright.mail.books import books_dir
from certwright.mail.claims import Claims
from certwright.mail.provision import MaildirPolicy
from certwright.state.location import open_store
from certwright.state.locks import daemon_lock
from certwright.state.sealing import Sealer
from certwright.state.urls import StoreURL
from certwright.steps.inventory import InventoryHook, policy_from

log = structlog.get_logger("certwright.daemon")

HOUSEKEEPING = 1.0  # seconds between sweeps (unclaimed mail, inbox, reloads)


def notify_systemd(state: str) -> None:
    """Tell systemd (``Type=notify``) ``READY=1``/``STOPPING=1``/...; no-op elsewhere."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    addr = "\0" + addr[1:] if addr.startswith("@") else addr  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), addr)
    except OSError as exc:
        log.warning("systemd_notify_failed", error=str(exc))


class Daemon:
    """The service loop. ``run()`` blocks until :meth:`stop` (or a signal); returns 0.

    Raises :class:`engine.errors.RunLocked` (naming the pid) when another daemon serves
    the store. Not re-entrant: one ``run()`` per instance.
    """

    def __init__(self, state_dir: Path, cfg: DaemonConfig, *, clock: Clock | None = None,
                 workers: int = 8, cli_overrides: Mapping[str, Any] | None = None,
                 store: StoreURL | None = None, sealer: Sealer | None = None,
                 settle_heap: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.store_url, self.sealer = store, sealer  # None: the SQLite file; no store key
        self.cfg, self.clock, self.workers = cfg, clock or clock_from_env(), workers
        self._overrides = dict(cli_overrides or {})
        self._stop, self._reload = threading.Event(), threading.Event()
        self._watched: set[str] = set()
        self.engine: Engine | None = None
        self.locks: RunLocks | None = None
        self.shared: Shared | None = None  # several daemons (PostgreSQL): leases
        self.router: MailRouter | None = None
        self.catalog: PipelineCatalog | None = None
        self.file_waits: FileWaits = FileWaits(None)
        self._stack: ExitStack | None = None
        self.ready = threading.Event()
        self.metrics_url: str | None = None
        self.settle_heap = settle_heap  # the process is this daemon's: see engine.daemon.warmup

    # -- control (thread- and signal-safe) ------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake()

    def _wake(self) -> None:
        if self.engine is not None:
            self.engine.submit(Event(kind="tick"))  # SimpleQueue.put is reentrant-safe

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (main thread only)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # -- helpers ------------------------------------------------------------------------
    def _covered(self, w: Wait) -> bool:
        """Whether the daemon watches everything this wait watches (then: no poll)."""
        if not self.cfg.suppress_mail_polls or not w.watch:
            return False
        return (all(c.startswith("mail:") for c in w.correlations)
                and all(os.path.realpath(p) in self._watched for p in w.watch))

    def _find(self, name: str) -> PipelineSpec:
        """The catalog's pipeline ``name`` (for the inventory's renewal policy)."""
        if self.catalog is None:
            raise CertwrightError(f"pipeline {name!r}: the daemon's catalog is not loaded yet")
        return self.catalog.find(name)

    def _start_run(self, spec: PipelineSpec, inputs: Mapping[str, Any], run_id: str,
                   secret: list[str], host: str | None = None) -> str:
        if self.engine is None:
            raise RuntimeError("the daemon is not running")
        return self.engine.start_run(spec, inputs, run_id, secret_inputs=secret, host=host)

    def _prepare(self, spec: PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
        """A new run's given inputs as ``run`` would make them: the configuration file's
        defaults under them, and the providers' addresses (``ca=embedded`` -> the
        embedded CA this daemon serves). Raises InputError when the run asks for the
        embedded CA and this daemon does not serve it."""
        from certwright.ca.provider import wants_embedded
        from certwright.engine.model.configfile import Config
        from certwright.engine.run.services import start_services_for
        defaults = Config.load(self.cfg.config_path).input_settings(spec.name, spec.inputs) \
            if self.cfg.from_files else {}
        given = {**{k: s.value for k, s in defaults.items()}, **given}
        if wants_embedded(spec, given) and not self.cfg.embedded:
            raise InputError("the run asks for the embedded CA (ca=embedded), which this "
                             "daemon does not serve: start it with --embedded, or give ca")
        if self._stack is None:
            raise RuntimeError("the daemon is not running")
        _, [values] = start_services_for(spec, [given], self.state_dir, self._stack)
        return values

    # -- the service ----------------------------------------------------------------------
    def run(self) -> int:
        with ExitStack() as stack:
            lock = daemon_lock(self.state_dir).acquire()
            stack.callback(lock.release)
            log.info("daemon_starting", pid=os.getpid(), state_dir=str(self.state_dir))
            store = open_store(self.state_dir, background_checkpoint=True, url=self.store_url,
                               sealer=self.sealer, warm=2)  # the engine's writer, a reader
            stack.callback(store.close)
            if hasattr(store, "hold_daemon"):  # a shared store: mark it served, for others
                store.hold_daemon()
            leases = leases_for(store, self.cfg.lease, self.cfg.host)
            lookup_store = open_store(self.state_dir, url=self.store_url,  # the router's own
                                      sealer=self.sealer, warm=1)
            stack.callback(lookup_store.close)
            services: dict[str, Any] = {}
            maildirs = list(self.cfg.maildirs)
            self._stack = stack
            if self.cfg.embedded:  # the built-in CA's provider, as `run` would start it
                from certwright.ca.provider import serve_embedded
                from certwright.engine.daemon.domains import StoreDomains
                domains = StoreDomains(self.state_dir, store=self.store_url)
                provision = serve_embedded(self.state_dir, self.cfg.embedded_domains, stack,
                                           domains.accepts)
                services.update(provision.services)
                maildirs.extend(provision.maildirs)
            inotify = None
            try:
                from certwright.mail.inotify import NewFileWatcher
                inotify = NewFileWatcher()
                stack.callback(inotify.stop)
            except OSError as exc:
                log.warning("inotify_unavailable", error=str(exc), fallback="watchdog")
            locks = self.locks = RunLocks(self.state_dir, covered=self._covered)
            stack.callback(locks.close)  # after the engine's close: nothing runs any more
            if leases is not None:
                stack.callback(leases.close)  # a graceful stop frees every run at once
            files = self.file_waits = FileWaits(inotify, skip=lambda p: p in self._watched)
            hooks = [leases or locks, files, InventoryHook(store, policy_from(self._find)),
                     *self._start_metrics(stack)]
            heartbeat = Heartbeat(store, self.clock, interval=self.cfg.heartbeat,
                                  metrics=self.metrics_url, host=self.cfg.host)
            hooks.append(heartbeat)  # told of commits: an idle beat counts no runs
            def make() -> Engine:
                opts = EngineOptions(workers=self.workers, host=self.cfg.host)
                self.engine = Engine(store, self.state_dir, clock=self.clock,
                                     services=services, interceptors=hooks, options=opts)
                return self.engine
            engine = make()
            stack.callback(lambda: self.engine.close() if self.engine else None)
            engine.open()
            if leases is not None:
                self.shared = stack.enter_context(Shared(leases, make, engine))  # + wake-ups

            catalog = PipelineCatalog(self.cfg.pipelines)
            catalog.reload()
            self.catalog = catalog
            observer = make_observer()
            if catalog.folder is not None and catalog.folder.is_dir():
                observer.schedule(catalog_handler(catalog, self._wake), str(catalog.folder))
            inbox = None
            if self.cfg.inbox is not None:
                inbox = Inbox(self.cfg.inbox, catalog, self._start_run,
                              lambda rid: store.find_run(rid) is not None,
                              csr_pipeline=self.cfg.csr_pipeline, csr_inputs=self.cfg.csr_inputs,
                              prepare=self._prepare)
                inbox.watch(observer, inotify, self._wake)
            router = self.router = MailRouter(
                lookup_store.runs_for, self._submit, grace=self.cfg.unmatched_grace,
                processed=lookup_store.is_processed, now=lambda: self.clock.now().timestamp(),
                claims=Claims.of(senders=self.cfg.ca_senders, origins=self.cfg.ca_origins))
            policy = MaildirPolicy(self.cfg.maildir_owner, self.cfg.maildir_group,
                                   self.cfg.maildir_mode)
            sources = [MaildirSource(Path(m), router, observer, inotify,
                                     books=books_dir(self.state_dir, m),
                                     state_dir=self.state_dir, policy=policy)
                       for m in maildirs]
            observer.start()
            stack.callback(lambda: (observer.stop(), observer.join(timeout=5)))
            self._watched = {os.path.realpath(f) for f in watched_folders(sources)}
            renewer = Renewer(self.state_dir, store, self.clock, catalog.find, self._start_run,
                              retry=self.cfg.renew_retry, retry_cap=self.cfg.renew_retry_cap)
            stack.callback(renewer.close)
            if inbox is not None:
                inbox.recover()
                inbox.process(sweep=True)
            stack.enter_context(MaildirPoll(sources, self.cfg.maildir_poll))  # + start each
            imaps = self._start_imap(router, stack, lookup_store)
            engine.sync(adopt=leases.adopt if leases else locks.claim)
            files.scan(store)
            load_steps(engine)
            heartbeat.beat()
            stack.callback(heartbeat.goodbye)
            frozen = settle() if self.settle_heap else None
            self.ready.set()
            notify_systemd("READY=1")
            log.info("daemon_ready", pid=os.getpid(), maildirs=[str(s.md.path) for s in sources],
                     imap=len(imaps), inbox=str(inbox.folder) if inbox else None,
                     pipelines=str(catalog.folder) if catalog.folder else None,
                     heap_frozen=frozen)
            self._loop(locks, router, catalog, inbox, renewer, heartbeat)
            notify_systemd("STOPPING=1")
            log.info("daemon_stopping", pid=os.getpid(),
                     idle=bool(self.engine and self.engine.idle()))
        log.info("daemon_stopped", pid=os.getpid())
        return 0

    def _start_metrics(self, stack: ExitStack) -> list[Any]:
        """Serve ``/metrics`` when ``metrics_listen`` is set: its interceptor (for the
        engine), or none. prometheus_client is imported only then. OSError when it cannot
        listen (the CLI words it)."""
        if self.cfg.metrics_listen is None:
            return []
        from certwright.engine.daemon.metrics import daemon_registry
        from certwright.metrics_http import serve_metrics
        reader = open_store(self.state_dir, readonly=True)  # scrapes never write
        stack.callback(reader.close)
        registry, hook = daemon_registry(
            reader, self.clock, cert_labels=self.cfg.metrics_certificates,
            mail_counts=lambda: dict(self.router.counts) if self.router else {})
        server = serve_metrics(registry, *self.cfg.metrics_listen)
        stack.callback(server.stop)
        self.metrics_url = server.url
        log.info("metrics_listening", url=server.url)
        return [hook]

    def _start_imap(self, router: MailRouter, stack: ExitStack, store: Any) -> list[Any]:
        if not self.cfg.imap:
            return []
        from certwright.mail.imap import ImapSource
        out = [ImapSource(url, self.state_dir, router, cafile=self.cfg.imap_cafile, store=store)
               for url in self.cfg.imap]
        for src in out:
            src.start()
            stack.callback(src.stop)
            self._watched.add(os.path.realpath(src.md.new))
        return out

    def _submit(self, event: Event, run_id: str | None = None) -> None:
        if self.engine is not None:
            self.engine.submit(event, run_id)

    def _loop(self, locks: RunLocks, router: MailRouter,
              catalog: PipelineCatalog, inbox: Inbox | None, renewer: Renewer,
              heartbeat: Heartbeat) -> None:
        last_house = last_sync = last_renew = 0.0
        while not self._stop.is_set():
            engine = self.engine
            if engine is None:
                raise RuntimeError("the daemon is not running")
            now = time.monotonic()
            wait = max(0.0, min(HOUSEKEEPING - (now - last_house), 60.0))
            if catalog.dirty.is_set():
                wait = min(wait, QUIET)
            if self.shared is not None:
                self.shared.pump(wait, self._stop)  # leases kept, faults survived
                engine = self.shared.engine
            else:
                engine.pump(timeout=wait)
                locks.release_idle()
            if self._stop.is_set():
                break
            if inbox is not None and inbox.pending():
                inbox.process()  # a dropped request starts now, not at the next sweep
            now = time.monotonic()
            if now - last_house < HOUSEKEEPING and not self._reload.is_set() \
                    and not catalog.settled(now):
                continue
            last_house = now
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    self._reload_config(router, inbox)
                    catalog.reload()
                elif catalog.settled(now):
                    catalog.reload()
                router.sweep()
                if heartbeat.due():
                    heartbeat.beat()
                if inbox is not None:
                    inbox.process(sweep=True)
                if now - last_sync >= self.cfg.sync_interval:
                    last_sync = now
                    engine.sync(adopt=self.shared.leases.adopt if self.shared
                                else locks.claim)
                    self.file_waits.scan(engine.store)  # runs parked elsewhere on a file
                due = renewer.next_due()
                if now - last_renew >= self.cfg.renew_check or (
                        due is not None and due <= self.clock.now() and now - last_renew >= 5):
                    last_renew = now
                    renewer.check()
            except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the service
                log.error("daemon_housekeeping_failed", error=f"{type(exc).__name__}: {exc}")
            took = time.monotonic() - now
            if took > 0.005:  # events wait while this runs: say so when it is not short
                log.warning("daemon_housekeeping_slow", ms=round(took * 1000, 1))

    def _reload_config(self, router: MailRouter, inbox: Inbox | None) -> None:
        notify_systemd("RELOADING=1")
        if self.cfg.from_files:
            try:
                fresh = load_daemon_config(self.cfg.config_path)
            except Exception as exc:  # noqa: BLE001 - keep the old config
                log.error("config_invalid", file=self.cfg.source, error=str(exc))
            else:
                fresh = merge_args(fresh, **self._overrides)
                self.cfg = fresh
                router.grace = fresh.unmatched_grace
                if inbox is not None:
                    inbox.csr_pipeline = fresh.csr_pipeline
                    inbox.csr_inputs = dict(fresh.csr_inputs)
                log.info("config_reloaded", file=self.cfg.source)
        notify_systemd("READY=1")
