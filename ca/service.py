"""One CA, wired: :class:`CAService` builds the objects a CA's requests use and holds them.

It opens the CA's folder (made by :func:`certwright.ca.setup.init_ca`): its config, its
store, the intermediate's signer, the outgoing mailer; then the two halves of the CA's
work, :class:`Accounts` (join, links, sessions) and :class:`Issuing` (domains,
probes, certificates, the CRL), and :class:`Recovery` (passphrase recovery), which share
those objects. The app calls
``service.accounts`` and ``service.issuing`` directly; this class decides nothing itself.

The weak-key blocklist is the one ``weak_key_blocklist`` names (the argument, else the
config's key), else badkeys' own (:func:`certwright.ca.weakkeys.find_blocklist`); a named
one that is missing or unreadable raises BlocklistError before anything is opened, and
having none is logged as a warning (``weak_key_blocklist_missing``).

Hazards: constructing it purges unconfirmed accounts (a store write), starts the outbox's
sender thread and keeps the store and the blocklist open: call :meth:`CAService.close`
when done.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from certwright.ca.accounts import Accounts
from certwright.ca.issuing import Issuing, ProbePolicy
from certwright.ca.outbox import Outbox, OutboxSender
from certwright.ca.outmail import Mailer
from certwright.ca.ratelimit import HashGate, RateLimiter, default_hash_concurrency
from certwright.ca.recovery import Recovery
from certwright.ca.setup import CAPaths, load_config
from certwright.ca.signer import Signer
from certwright.ca.store import CAStore
from certwright.ca.weakkeys import MISSING_BLOCKLIST, Blocklist, find_blocklist
from certwright.clock import Clock, SystemClock

log = structlog.get_logger("ca.service")


class CAService:
    """One CA: its store, signer, mailer, policy and clock, and what works with them."""

    def __init__(self, ca_dir: Path, *, public_url: str,
                 smarthost: tuple[str, int] | None = None, policy: str = "cacert",
                 clock: Clock | None = None, mail_from: str = "ca@certwright.invalid",
                 settings: Mapping[str, Any] | None = None,
                 weak_key_blocklist: str | None = None) -> None:
        probe_policy = ProbePolicy.named(policy)  # before anything is opened
        self.clock = clock or SystemClock()
        # ``settings`` (the server's options) win over the folder's config.json
        self.config = {**load_config(ca_dir), **(settings or {})}
        self.limiter = RateLimiter(Path(ca_dir) / "ratelimit.sqlite3", clock=self.clock,
                                   setting=self.config.get("rate_limits"))
        self.gate = HashGate(int(self.config.get("password_hash_concurrency")
                                 or default_hash_concurrency()),
                             int(self.config.get("password_hash_queue", 64)))
        found = find_blocklist(ca_dir, weak_key_blocklist or self.config["weak_key_blocklist"])
        self.blocklist = Blocklist.load(found) if found else None
        if self.blocklist is None:
            log.warning("weak_key_blocklist_missing", hint=MISSING_BLOCKLIST)
        else:
            log.info("weak_key_blocklist", path=str(found), entries=len(self.blocklist))
        self.public_url = public_url.rstrip("/")
        self.policy = policy
        self.store = CAStore(CAPaths(Path(ca_dir)).db, clock=self.clock)
        self.signer = Signer(ca_dir, self.public_url)
        self.mailer = Mailer(smarthost=smarthost, mail_from=mail_from, clock=self.clock)
        self.outbox = Outbox(store=self.store, mailer=self.mailer, clock=self.clock,
                             key_path=Path(ca_dir) / "outbox.key")
        self.issuing = Issuing(store=self.store, signer=self.signer, outbox=self.outbox,
                               clock=self.clock, config=self.config,
                               public_url=self.public_url, policy=probe_policy,
                               blocklist=self.blocklist)
        self.accounts = Accounts(store=self.store, outbox=self.outbox, clock=self.clock,
                                 config=self.config, public_url=self.public_url,
                                 domains=self.issuing)
        self.recovery = Recovery(store=self.store, outbox=self.outbox, clock=self.clock,
                                 config=self.config)
        self.accounts.purge()
        # Sends what the outbox holds, including what a killed process left unsent.
        self.sender = OutboxSender(self.outbox).start()

    def close(self) -> None:
        """Stop the outbox's sender, QUIT kept SMTP sessions, close the store, the rate
        limits and the blocklist; safe to call twice."""
        self.sender.stop()
        self.mailer.close()
        self.store.close()
        self.limiter.close()
        if self.blocklist is not None:
            self.blocklist.close()
