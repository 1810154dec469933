"""One CA, wired: :class:`CAService` builds the objects a CA's requests use and holds them.

It opens the CA's folder (made by :func:`certwright.ca.setup.init_ca`): its config, its
store, the intermediate's signer, the outgoing mailer; then the two halves of the CA's
work, :class:`Accounts` (join, links, sessions, recovery) and :class:`Issuing` (domains,
probes, certificates, the CRL), which share those objects. The app calls
``service.accounts`` and ``service.issuing`` directly; this class decides nothing itself.

Hazards: constructing it purges unconfirmed accounts (a store write), starts the outbox's
sender thread and keeps the store open: call :meth:`CAService.close` when done.
"""
from __future__ import annotations

from pathlib import Path

from certwright.ca.accounts import Accounts
from certwright.ca.issuing import Issuing, ProbePolicy
from certwright.ca.outbox import Outbox, OutboxSender
from certwright.ca.outmail import Mailer
from certwright.ca.setup import CAPaths, load_config
from certwright.ca.signer import Signer
from certwright.ca.store import CAStore
from certwright.clock import Clock, SystemClock


class CAService:
    """One CA: its store, signer, mailer, policy and clock, and what works with them."""

    def __init__(self, ca_dir: Path, *, public_url: str,
                 smarthost: tuple[str, int] | None = None, policy: str = "cacert",
                 clock: Clock | None = None, mail_from: str = "ca@certwright.invalid") -> None:
        probe_policy = ProbePolicy.named(policy)  # before anything is opened
        self.clock = clock or SystemClock()
        self.config = load_config(ca_dir)
        self.public_url = public_url.rstrip("/")
        self.policy = policy
        self.store = CAStore(CAPaths(Path(ca_dir)).db, clock=self.clock)
        self.signer = Signer(ca_dir, self.public_url)
        self.mailer = Mailer(smarthost=smarthost, mail_from=mail_from, clock=self.clock)
        self.outbox = Outbox(store=self.store, mailer=self.mailer, clock=self.clock,
                             key_path=Path(ca_dir) / "outbox.key")
        self.issuing = Issuing(store=self.store, signer=self.signer, outbox=self.outbox,
                               clock=self.clock, config=self.config,
                               public_url=self.public_url, policy=probe_policy)
        self.accounts = Accounts(store=self.store, outbox=self.outbox, clock=self.clock,
                                 config=self.config, public_url=self.public_url,
                                 domains=self.issuing)
        self.accounts.purge()
        # Sends what the outbox holds, including what a killed process left unsent.
        self.sender = OutboxSender(self.outbox).start()

    def close(self) -> None:
        """Stop the outbox's sender, QUIT kept SMTP sessions, close the store; safe to
        call twice."""
        self.sender.stop()
        self.mailer.close()
        self.store.close()
