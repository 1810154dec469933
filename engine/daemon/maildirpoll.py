"""The daemon's Maildir sources started, and polled when asked: a Maildir on a shared filesystem.

inotify (and watchdog's fallback) sees the writes of this host only: a Maildir on NFS,
CIFS or a cluster filesystem that another host delivers into raises no event here, so its
mail would wait for the next restart's scan. With ``maildir_poll: SECONDS`` in the daemon's
configuration (``--maildir-poll SECONDS``) a thread lists each Maildir's ``new/`` every
SECONDS and routes the names it did not see at its last look; those it saw were routed
already, by the watcher or an earlier poll (the router's sweep re-offers what is pending).
A message written without any event is so routed within one interval. 0 (the default)
polls nothing: inotify alone, as on a local disk.

Hazards: each poll is one listing of ``new/`` per Maildir (on NFS one READDIR round trip,
which the client may cache for its ``acdirmin``, a few seconds: mount with ``noac`` or
``lookupcache=positive`` for a shorter wait). Names are routed from the poll thread;
:meth:`MailRouter.route` is thread-safe. A poll that fails (the share is gone) is logged
(``maildir_poll_failed``) and tried again at the next interval.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import structlog

from certwright.engine.daemon.mailroute import MaildirSource

__all__ = ["MaildirPoll"]

log = structlog.get_logger("certwright.daemon.mail")


class MaildirPoll:
    """Starts ``sources`` (watch and scan each) on entering; then, with ``every`` > 0
    seconds, polls their ``new/`` in a thread until the block is left."""

    def __init__(self, sources: Sequence[MaildirSource], every: float) -> None:
        self.sources = list(sources)
        self.every = every
        self._seen: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        for source in self.sources:
            source.start()
            self._seen[str(source.md.path)] = set(source.md.list_new())
        if self.every > 0 and self.sources:
            self._thread = threading.Thread(target=self._run, name="maildir-poll",
                                            daemon=True)
            self._thread.start()
            log.info("maildir_polling", every=self.every,
                     maildirs=[str(s.md.path) for s in self.sources])
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def poll(self) -> int:
        """List every Maildir's ``new/`` once and route what is new there; how many."""
        routed = 0
        for source in self.sources:
            key = str(source.md.path)
            try:
                names = set(source.md.list_new())
            except OSError as exc:
                log.warning("maildir_poll_failed", maildir=key, error=str(exc))
                continue
            for name in sorted(names - self._seen.get(key, set())):
                source.router.route(source.md, name)
                routed += 1
            self._seen[key] = names
        if routed:
            log.info("maildir_polled", messages=routed)
        return routed
