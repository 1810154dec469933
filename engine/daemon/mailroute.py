"""Mail sources of the daemon: Maildirs watched with inotify, and routing to waiting runs.

Each message that appears in a watched Maildir's ``new/`` is read and parsed **once**
(:class:`certwright.mail.intake.Intake`, shared with the mail steps); its recipients (``To`` and
``Delivered-To``) become correlation keys (``mail_key(addr)``); the store's correlation
index says which runs wait for them (an indexed lookup, never a scan of runs); the engine
gets one ``Event(kind="mail", key=..., payload={"file": name})`` per key with a waiting
run, and the run's ``wait.mail`` step takes the message (moves it to ``cur/``).

The rule for everything else (``unmatched_grace`` defaults to 10 minutes). It applies only
to mail that claims to be the CA's (:mod:`certwright.mail.claims`: the CA's header, a CA
sender, a link to a CA origin, as the daemon's :class:`Claims` know them): a mailbox may
be shared with people, and **their mail is never moved** (``foreign``): not when it does
not parse, not when nobody takes it (it is offered to runs waiting for its address, whose
steps judge it with what they know of their CA, and then left alone).

* **suspicious** (claims to be the CA's, and an HTML link shows one URL but points to
  another) -> moved aside at once, whether or not a run waits for it.
* **hostile** (``HostileMail``: truncated MIME, too big, nested too deep, undecodable or
  ambiguous headers) -> moved aside at once, the reason logged (``mail_hostile``).
* **duplicate** (its Message-ID, or the SHA-256 of a message without one, was already
  taken from another file, per the store's marks, :mod:`certwright.mail.ledger`) -> moved
  aside at once.
* **unmatched** (no run waits for any recipient) -> kept in ``new/``: a run may be just
  about to park and wait for it. The sweep re-routes it each second; once it has been in
  ``new/`` for the grace period (counted from the later of its delivery and this daemon's
  start) it is moved aside as ``unmatched``.
* **not taken** (routed, but the waiting run(s) left it in ``new/``, e.g. a link for
  another request) -> moved aside after the same grace period.
* **claimed elsewhere** (an IMAP mailbox several daemons read: another daemon's claim in
  the store was first, :mod:`certwright.mail.imapbox`) -> :meth:`MailRouter.hold` keeps it
  in ``new/`` unrouted: the other daemon routes it, but a run whose lease this daemon
  holds re-checks its wait here, in this spool. Once the store says it was taken (by a
  step anywhere, for more than a second: a step's own move to ``cur/`` comes just after
  its commit) it is moved aside as **taken elsewhere**; so is a routed copy of an IMAP
  spool that a step of another daemon took. Not taken within the grace: moved aside.
  A routed copy of an IMAP spool is offered again to the runs still waiting for it, after
  2 s, 4 s ... up to once a minute: a run whose lease another daemon held was re-checked
  there, in a spool that may lack the message (that daemon never fetched it).

Nothing is ever deleted; moving aside goes to the mailbox's quarantine in the state dir
(:mod:`certwright.mail.books`) with a reason file (``Maildir.move_aside``). Every exception
from a message is caught and logged (``mail_route_failed``): no mail can stop the daemon.

Thread-safety: :meth:`MailRouter.route` is called from the watcher thread and from the
main loop (start-up scan, sweep); its bookkeeping is under a lock, the store lookups use
the router's own read connection.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from certwright.errors import InputError
from certwright.events import Event, mail_key
from certwright.mail.claims import Claims
from certwright.mail.intake import Admitted, Foreign, Intake, Refused
from certwright.mail.maildir import Maildir
from certwright.mail.provision import MaildirMissing, MaildirPolicy, prepare_maildir

log = structlog.get_logger("certwright.daemon.mail")

# what route() did; a message moved aside is reported by its kind ("hostile", "duplicate")
ROUTED, PENDING, GONE, ASIDE, FOREIGN = "routed", "pending", "gone", "aside", "foreign"
TAKEN_SETTLE = 1.0  # seconds an IMAP spool's copy is seen taken before it goes aside
REOFFER_FIRST, REOFFER_CAP = 2.0, 60.0  # an IMAP spool's routed copy offered again


@dataclass
class _Pending:
    """A message still in ``new/`` after routing: its keys and when the grace started."""

    md: Maildir
    keys: tuple[str, ...]
    message_id: str
    since: float  # wall-clock seconds
    claimed: bool = True  # claims to be the CA's: moved aside when nobody takes it
    routed: set[str] = field(default_factory=set)  # run ids it was offered to
    held: bool = False  # another daemon routes it (see MailRouter.hold): never offered
    taken_at: float | None = None  # monotonic time the store was first seen to say taken
    reoffer_at: float = 0.0  # monotonic time of the next offer to every waiting run
    reoffer_every: float = 0.0  # seconds from this offer to the next


class MailRouter:
    """Turns Maildir messages into engine events; moves aside what nobody can take.

    ``lookup(key)`` returns the run ids waiting for a correlation key; ``submit(event)``
    hands an event to the engine (thread-safe); ``now()`` is wall-clock seconds;
    ``processed`` is the store's ``is_processed`` (which messages were taken).
    """

    def __init__(self, lookup: Callable[[str], list[str]], submit: Callable[[Event], None],
                 *, grace: float = 600.0, now: Callable[[], float] = time.time,
                 claims: Claims | None = None,
                 processed: Callable[[str, str], bool] | None = None) -> None:
        self._lookup = lookup
        self._processed = processed
        self.claims = claims or Claims()
        self._submit = submit
        self.grace = grace
        self._now = now
        self._started = now()
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._intakes: dict[str, Intake] = {}  # by Maildir path (see _intake)
        self.counts: dict[str, int] = {}
        self.last_routed: dict[str, float] = {}  # file name -> monotonic time (benchmark)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def route(self, md: Maildir, name: str) -> str:
        """Route message ``name`` of ``md`` once; returns what happened (see module doc).

        Never raises for anything about the message. Repeat calls for a message already
        seen only re-offer it (no second parse).
        """
        if name.startswith(".") or "/" in name:
            return GONE
        with self._lock:
            known = self._pending.get((str(md.path), name))
        if known is not None:
            if not known.held:
                self._offer(known, name)
            return PENDING
        try:
            return self._route_new(md, name)
        except Exception as exc:  # noqa: BLE001 - nothing about one mail may stop the daemon
            log.error("mail_route_failed", file=name, maildir=str(md.path),
                      error=f"{type(exc).__name__}: {exc}")
            return PENDING

    def hold(self, md: Maildir, name: str) -> str:
        """Keep message ``name`` of an IMAP spool in ``new/`` without routing it: another
        daemon claimed it (see the module doc). Never raises for anything about it."""
        try:
            mtime = (md.new / name).stat().st_mtime
            admitted = self._admit(md, name)
            if isinstance(admitted, str):
                return admitted
            if self.claims.claim(admitted.mail) is None:
                return self._foreign(name, "another daemon routes it")
            with self._lock:
                self._pending[(str(md.path), name)] = _Pending(
                    md, (), admitted.message_id, since=max(mtime, self._started), held=True)
        except FileNotFoundError:
            return GONE
        except Exception as exc:  # noqa: BLE001 - nothing about one mail may stop the daemon
            log.error("mail_route_failed", file=name, maildir=str(md.path),
                      error=f"{type(exc).__name__}: {exc}")
            return PENDING
        self._count("held")
        log.info("mail_claimed_elsewhere", file=name, message_id=admitted.message_id)
        return PENDING

    def _intake(self, md: Maildir) -> Intake:
        """The intake of ``md``, made once per Maildir: making one (its processed log
        found, a logger bound) for every message and every sweep of a pending one was a
        tenth of the router's CPU."""
        key = str(md.path)
        intake = self._intakes.get(key)
        if intake is None or intake.claims is not self.claims:
            intake = self._intakes[key] = Intake(md, log.bind(maildir=key), self.claims,
                                                 self._processed)
        return intake

    def _admit(self, md: Maildir, name: str) -> Admitted | str:
        """Message ``name`` parsed and checked, or what became of it (GONE, foreign, aside)."""
        admitted = self._intake(md).admit(name)
        if admitted is None:
            return GONE
        if isinstance(admitted, Foreign):
            return self._foreign(name, admitted.reason)
        if isinstance(admitted, Refused):
            return self._settled(md, name, admitted)
        return admitted

    def _route_new(self, md: Maildir, name: str) -> str:
        intake = self._intake(md)
        try:
            mtime = (md.new / name).stat().st_mtime
        except FileNotFoundError:
            return GONE  # taken already (a run scanned new/ first)
        admitted = self._admit(md, name)
        if isinstance(admitted, str):
            return admitted
        message_id = admitted.message_id
        if intake.finish_taken(name, message_id):
            return GONE  # taken already; its move to cur/ was not done (a crash, a power cut)
        mail = admitted.mail
        claimed = self.claims.claim(mail) is not None
        if claimed and mail.suspicious_links:
            return self._settled(md, name, intake.set_aside(
                name, "suspicious: an HTML link shows one URL and points to another ("
                + ", ".join(u[:100] for u in mail.suspicious_links[:4]) + ")",
                kind="suspicious"))
        addrs = dict.fromkeys(a.lower() for a in [*mail.to_addrs, *mail.delivered_to])
        pending = _Pending(md, tuple(mail_key(a) for a in addrs), message_id,
                           since=max(mtime, self._started), claimed=claimed)
        if not claimed and not any(self._lookup(k) for k in pending.keys):
            return self._foreign(name, "no run waits for it")
        with self._lock:
            self._pending[(str(md.path), name)] = pending
        # Offer first (latency): a waiting step checks duplicates itself before taking.
        offered = self._offer(pending, name)
        refused = intake.refuse_duplicate(name, message_id)
        if refused is not None:
            return self._settled(md, name, refused)
        self._count(ROUTED if offered else PENDING)
        log.info("mail_routed" if offered else "mail_unmatched", file=name,
                 message_id=message_id, runs=sorted(pending.routed)[:10])
        return ROUTED if offered else PENDING

    def _offer(self, p: _Pending, name: str) -> bool:
        """Submit one event per key that has waiting runs not yet offered this message."""
        offered = False
        for key in p.keys:
            runs = [r for r in self._lookup(key) if r not in p.routed]
            if runs:
                p.routed.update(runs)
                self.last_routed[name] = time.monotonic()
                self._submit(Event(kind="mail", key=key, payload={"file": name}))
                offered = True
        return offered

    def _foreign(self, name: str, why: str) -> str:
        """Someone else's mail (not the CA's): counted, logged, never touched."""
        self._count(FOREIGN)
        log.debug("mail_not_ours", file=name, reason=why)
        return FOREIGN

    def _settled(self, md: Maildir, name: str, refused: Refused) -> str:
        """Forget a message the intake moved aside and count it; GONE if it had vanished."""
        if not refused.moved:
            return GONE
        with self._lock:
            self._pending.pop((str(md.path), name), None)
        self._count(refused.kind)
        return refused.kind

    def sweep(self) -> int:
        """Forget taken messages, re-offer pending ones, move aside expired ones.

        Returns how many were moved aside. Safe to call often; never raises for a message.
        """
        with self._lock:
            items = list(self._pending.items())
        now, moved = self._now(), 0
        for (_, name), p in items:
            try:
                if not (p.md.new / name).exists():
                    with self._lock:
                        self._pending.pop((str(p.md.path), name), None)
                    continue
                intake = self._intake(p.md)
                refused = intake.refuse_duplicate(name, p.message_id) \
                    or self._taken_elsewhere(intake, p, name)
                if refused is not None:
                    self._settled(p.md, name, refused)
                    moved += 1
                elif now - p.since >= self.grace and not p.claimed:
                    with self._lock:  # a person's mail its run(s) left: never touched
                        self._pending.pop((str(p.md.path), name), None)
                    log.info("mail_left_alone", file=name, runs=sorted(p.routed)[:5])
                elif now - p.since >= self.grace:
                    why = ("routed by another daemon (its claim came first), not taken"
                           if p.held else f"not taken by the run(s) it was offered to "
                           f"({', '.join(sorted(p.routed)[:5])})" if p.routed
                           else "unmatched: no run waits for " + (", ".join(
                               k.removeprefix("mail:") for k in p.keys[:5]) or "no recipient"))
                    self._settled(p.md, name, intake.set_aside(
                        name, f"{why} within {int(self.grace)} s", kind="unmatched"))
                    moved += 1
                elif not p.held:
                    if intake.ledger.shared:
                        self._reoffer_due(p)
                    self._offer(p, name)
            except Exception as exc:  # noqa: BLE001
                log.error("mail_route_failed", file=name, error=f"{type(exc).__name__}: {exc}")
        return moved

    @staticmethod
    def _reoffer_due(p: _Pending) -> None:
        """Forget whom an IMAP spool's copy was offered to, when its next offer is due."""
        now = time.monotonic()
        if not p.reoffer_at:
            p.reoffer_every = REOFFER_FIRST
        elif now >= p.reoffer_at:
            p.routed.clear()
            p.reoffer_every = min(REOFFER_CAP, p.reoffer_every * 2)
        else:
            return
        p.reoffer_at = now + p.reoffer_every

    @staticmethod
    def _taken_elsewhere(intake: Intake, p: _Pending, name: str) -> Refused | None:
        """An IMAP spool's copy the store has said was taken for over a second (a step of
        another daemon took its own copy): moved aside; None while it is not so."""
        if not intake.ledger.shared or intake.ledger.taken(p.message_id, name) is None:
            p.taken_at = None
            return None
        if p.taken_at is None or time.monotonic() - p.taken_at < TAKEN_SETTLE:
            p.taken_at = p.taken_at or time.monotonic()
            return None  # a step of this daemon may be moving it to cur/ right now
        return intake.set_aside(name, "taken elsewhere: the store says another daemon's "
                                "copy of this message was taken", kind="taken_elsewhere")

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


class _NewHandler(FileSystemEventHandler):
    def __init__(self, source: MaildirSource) -> None:
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "moved", "closed"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        path = path.decode() if isinstance(path, bytes) else str(path)
        if Path(path).parent != self.source.md.new:
            return
        self.source.router.route(self.source.md, Path(path).name)


class MaildirSource:
    """Watches one Maildir's ``new/`` and routes every message that appears there.

    Uses :class:`engine.daemon_inotify.NewFileWatcher` when given (no added latency), else
    a watchdog observer (portable; up to 0.5 s late after a message was taken).
    """

    def __init__(self, path: Path, router: MailRouter, observer: Any,
                 inotify: Any = None, books: Path | None = None,
                 state_dir: Path | None = None, policy: MaildirPolicy | None = None) -> None:
        self.md = Maildir(Path(path).resolve(), books=books)
        self._state_dir = state_dir
        self._policy = policy or MaildirPolicy()
        self.router = router
        self._observer = observer
        self._inotify = inotify  # engine.daemon_inotify.NewFileWatcher, when available

    def start(self) -> None:
        """Make sure the Maildir exists, watch ``new/``, then route what is already there.

        A missing Maildir is created only as :func:`certwright.mail.provision.prepare_maildir`
        allows; else InputError says how to create it. Watch first, scan second: a message
        arriving in between is seen twice, which routing tolerates (the second sight only
        re-offers it).
        """
        if self._state_dir is None:
            self.md.ensure()
        else:
            try:
                prepare_maildir(self.md, state_dir=self._state_dir, policy=self._policy)
            except MaildirMissing as exc:
                raise InputError(str(exc)) from None
        if self._inotify is not None:
            self._inotify.watch(str(self.md.new), self._appeared)
        else:
            self._observer.schedule(_NewHandler(self), str(self.md.new), recursive=False)
        self.scan()

    def _appeared(self, name: str | None) -> None:
        if name is None:  # the kernel's event queue overflowed: look at everything
            self.scan()
        else:
            self.router.route(self.md, name)

    def scan(self) -> int:
        """Route every message in ``new/`` (mail that arrived while the daemon was down)."""
        names = self.md.list_new()
        for name in names:
            self.router.route(self.md, name)
        if names:
            log.info("maildir_scanned", maildir=str(self.md.path), messages=len(names))
        return len(names)


def watched_folders(sources: Iterable[MaildirSource]) -> set[str]:
    """The ``new/`` folders (resolved) of these sources, for poll suppression."""
    return {str(s.md.new) for s in sources}


def make_observer() -> Any:
    """A started-later watchdog observer (daemon thread)."""
    obs = Observer()
    obs.daemon = True
    return obs
