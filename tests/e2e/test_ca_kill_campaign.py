"""The fault campaign's part (c): the CA killed (SIGKILL) during signing and mailing.

A real ``certwright ca serve`` process mails through a real SMTP server on loopback
(aiosmtpd, delivering into a Maildir) that also decides, per seed, where the CA dies:

* ``request``: at a random moment of the sign request (before or after its commit);
* ``rcpt``: while the issuance mail's envelope is sent (mid-SMTP, no content yet);
* ``data``: after the content arrived, before the MTA's reply (kept or not by the MTA,
  as a real one may keep a message whose client vanished);
* ``after_250``: right after the MTA's 250, before the CA could mark the row sent.

After each kill the CA is started again and the client repeats its request with the same
idempotency key, as the ``ca.sign`` step does. Then: one certificate per key, every
certificate's mail in the Maildir (none missing), no certificate with two different mails
(a resend is the same message: one Message-ID). The figures are printed.
"""
from __future__ import annotations

import asyncio
import email
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import structlog
from aiosmtpd.controller import Controller

from certwright.ca.passphrase import generate_passphrase
from certwright.mail.intake import Admitted, Intake
from certwright.mail.maildir import Maildir
from certwright.state.sqlite import SQLiteStore
from tests.fixtures.daemon.harness import Proc, env_for, spawn, wait_for
from tests.support.ca import LINK_RE, free_port, make_csr, questions

SEEDS = int(os.environ.get("CERTWRIGHT_CA_KILL_SEEDS", "20"))
PLANS = ("request", "rcpt", "data", "after_250")
DOMAIN = "kill.test"
EMAIL = f"admin@{DOMAIN}"


class KillingSink:
    """An SMTP server into ``md`` that SIGKILLs the CA at the planned point, once."""

    def __init__(self, md: Maildir) -> None:
        self.md = md
        self.plan: tuple[str, bool] | None = None  # (point, keep the content)
        self.kill: Any = None  # set by the test: kills the CA process
        self.fired = threading.Event()

    def _fire(self) -> None:
        self.plan = None
        self.kill()
        self.fired.set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if self.plan is not None and self.plan[0] == "rcpt":
            self._fire()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) \
            else envelope.content.encode()
        issuance = b"X-Certwright-Kind: cert_issued" in raw
        plan = self.plan if issuance else None
        if plan is not None and plan[0] == "data":
            self._fire()
            if plan[1]:
                self.md.deliver(raw)
            return "451 4.3.0 the client went away"
        self.md.deliver(raw)
        if plan is not None and plan[0] == "after_250":
            self.plan = None
            asyncio.get_running_loop().call_soon(self._fire)  # after the reply is written
        return "250 Message accepted"


class CA:
    """``certwright ca serve`` on a fixed port, killed and started again by the test."""

    def __init__(self, root: Path, smtp_port: int) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["ca", "serve", "--dir", str(root / "ca"), "--listen",
                     f"127.0.0.1:{self.port}", "--smarthost", f"127.0.0.1:{smtp_port}"]
        self.proc: Proc | None = None
        self.starts = self.kills = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = spawn(self.args, env_for(self.root / "state"),
                          self.root / f"ca{self.starts}.log")
        wait_for(lambda: "CA listening" in self.proc.text() or self.proc.popen.poll() is not None,
                 60, "the CA to listen")
        assert self.proc.popen.poll() is None, self.proc.text()[-3000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.popen.poll() is None:
            self.proc.popen.send_signal(signal.SIGKILL)
            self.proc.popen.wait(30)
            self.kills += 1

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.root / 'ca' / 'ca.sqlite3'}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


def _link(md: Maildir, to: str) -> str:
    for name in md.list_new():
        msg = email.message_from_bytes(md.read(name))
        if to in str(msg["To"]):
            match = LINK_RE.search(msg.get_payload(decode=True).decode())  # type: ignore[union-attr]
            if match:
                return match.group(1)
    raise AssertionError(f"no link mailed to {to}")


def _follow(http: httpx.Client, link: str) -> None:
    path = "/" + link.split("://", 1)[1].split("/", 1)[1].split("?", maxsplit=1)[0]
    http.post(path, data={"token": link.split("token=")[1], "action": "verify"}).raise_for_status()


def _account(ca: CA, md: Maildir) -> dict[str, str]:
    """Join, confirm, log in, verify the domain: the campaign's one shared account."""
    passphrase = generate_passphrase("Kim Killer", EMAIL)
    with httpx.Client(base_url=ca.url, timeout=30) as http:
        http.post("/api/v1/accounts", json={"email": EMAIL, "name": "Kim Killer",
                                            "passphrase": passphrase,
                                            "questions": questions()}).raise_for_status()
        _follow(http, wait_for(lambda: _try_link(md, EMAIL), 30, "the confirmation mail"))
        token = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": passphrase}
                          ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=auth).raise_for_status()
        http.post(f"/api/v1/domains/{DOMAIN}/probes", json={"local_part": "postmaster"},
                  headers=auth).raise_for_status()
        _follow(http, wait_for(lambda: _try_link(md, f"postmaster@{DOMAIN}"), 30, "the probe"))
    return auth


def _try_link(md: Maildir, to: str) -> str | None:
    try:
        return _link(md, to)
    except AssertionError:
        return None


def _sign(ca: CA, auth: dict[str, str], csr: str, key: str) -> str | None:
    """POST the CSR; the serial, or None when the CA died under the request."""
    try:
        with httpx.Client(base_url=ca.url, timeout=30) as http:
            r = http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": key},
                          headers=auth)
    except httpx.TransportError:
        return None
    assert r.status_code in (200, 201), r.text
    return str(r.json()["serial"])


def test_the_ca_killed_while_signing_and_mailing_loses_and_duplicates_no_mail(
        tmp_path: Path) -> None:
    """20 seeds, one kill each at a drawn point: afterwards every certificate has its
    mail, none has two, and each idempotency key has one certificate."""
    md = Maildir(tmp_path / "Maildir")
    md.ensure()
    sink = KillingSink(md)
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    ca = CA(tmp_path, smtp_port)
    sink.kill = ca.kill
    serials: dict[str, str] = {}
    points: Counter[str] = Counter()
    try:
        ca.start()
        auth = _account(ca, md)
        for seed in range(SEEDS):
            rng = random.Random(seed)
            point = rng.choice(PLANS)
            points[point] += 1
            csr, _ = make_csr([f"s{seed}.{DOMAIN}"])
            key = f"seed-{seed}"
            sink.fired.clear()
            if point == "request":
                timer = threading.Timer(rng.uniform(0.0, 0.08), ca.kill)
                timer.start()
                _sign(ca, auth, csr, key)
                timer.join()
            else:
                sink.plan = (point, rng.random() < 0.5)
                _sign(ca, auth, csr, key)
                wait_for(sink.fired.is_set, 30, f"the kill at {point}")
            sink.plan = None
            if ca.proc is not None and ca.proc.popen.poll() is None:
                ca.kill()  # a request kill that came after the answer: kill it all the same
            ca.start()
            serial = None
            for _ in range(5):  # the step's retry: same key, new connection
                serial = _sign(ca, auth, csr, key)
                if serial:
                    break
                time.sleep(0.5)
            assert serial, f"seed {seed}: no certificate after the restart"
            serials[key] = serial
        wait_for(lambda: not ca.rows("SELECT id FROM outbox WHERE status='pending'"), 60,
                 "the outbox to empty")
        kills = ca.kills  # the campaign's; the one below only ends the test
    finally:
        ca.kill()
        controller.stop()

    certificates = ca.rows("SELECT idem_key, serial FROM certificates")
    mails: dict[str, set[str]] = {}
    copies = 0
    for name in md.list_new():
        msg = email.message_from_bytes(md.read(name))
        if msg["X-Certwright-Kind"] != "cert_issued":
            continue
        copies += 1
        body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
        serial = body.split("Serial: ", 1)[1].split()[0]
        mails.setdefault(serial, set()).add(str(msg["Message-ID"]))
    issued = {serial for _, serial in certificates}
    missing = sorted(issued - set(mails))
    duplicated = sorted(s for s, ids in mails.items() if len(ids) > 1)
    failed = ca.rows("SELECT id, last_error FROM outbox WHERE status='failed'")
    print(f"\nCA kill campaign: seeds={SEEDS} kills={kills} points={dict(points)} "
          f"certificates={len(certificates)} mails={sum(len(v) for v in mails.values())} "
          f"copies={copies} (a resend of one row: same Message-ID) "
          f"duplicates={len(duplicated)} missing={len(missing)} failed_rows={len(failed)}")
    # The copies are dropped by the one intake: each Message-ID is taken once.
    books = Maildir(md.path, books=tmp_path / "books")
    takes = SQLiteStore(tmp_path / "takes.sqlite")
    intake = Intake(books, structlog.get_logger(), processed=takes.is_processed)
    ids, taken = set(), 0
    for name in books.list_new():
        got = intake.admit(name)
        assert isinstance(got, Admitted), got
        ids.add(got.message_id)
        if intake.refuse_duplicate(name, got.message_id) is None:
            with takes.transaction() as tx:  # as the engine commits a step's marks
                marked = [tx.mark_processed(s, i, f"step-{name}")
                          for s, i in intake.ledger.marks(got.message_id, name)]
            taken += all(marked)
    takes.close()
    print(f"intake: messages={len(ids)} taken={taken} (copies dropped as duplicates)")
    assert taken == len(ids)
    assert len(certificates) == len({k for k, _ in certificates}) == SEEDS
    assert dict(certificates) == serials
    assert missing == [] and duplicated == [] and failed == []
