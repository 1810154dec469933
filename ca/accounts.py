"""The CA's accounts: join, confirmation links, login sessions, the purge.

(Passphrase recovery is :mod:`certwright.ca.recovery`.)

:class:`Accounts` holds what it works with (the store, the outbox, the clock, the config)
and, for domain links, the object that records a domain as verified (:class:`Issuing`,
seen here only through :class:`DomainVerifier`). Every public method returns a JSON-able
dict or raises :class:`ApiError`, which the app turns into ``{"error": code, ...}``.

Contract for links (account confirmations and domain probes): 256-bit tokens stored as
sha256, valid ``link_hours`` (48), single use; :data:`MAX_TOKEN_FAILURES` wrong tokens
cancel the request. Reading a link (:meth:`Accounts.describe_link`) never changes
anything; only :meth:`Accounts.confirm` does, inside one store transaction so two
concurrent POSTs cannot both act.

Hazards: a join whose confirmation mail fails deletes the account again (502); the purge
of unconfirmed accounts runs at most every :data:`PURGE_EVERY` (see :meth:`purge_due`),
so an account may outlive ``account_purge_hours`` by that much.
"""
from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from certwright.ca.errors import ApiError
from certwright.ca.outbox import Outbox
from certwright.ca.passphrase import check_passphrase
from certwright.ca.store import CAStore, check_secret, hash_secret, hash_token, normalize_answer
from certwright.clock import Clock, format_instant, parse_instant

log = structlog.get_logger("ca.accounts")

MAX_TOKEN_FAILURES = 6
SESSION_HOURS = 1
#: How often requests run the purge of unconfirmed accounts (48 h old): a minute late
#: at most, instead of a write transaction on every request.
PURGE_EVERY = timedelta(minutes=1)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[a-z0-9.-]{1,253}$")
# Compared against when an email is unknown, so both paths cost one scrypt.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))


class DomainVerifier(Protocol):
    """What a followed domain link needs from the issuing side."""

    def mark_verified(self, account_id: str, domain: str, link_id: str) -> bool | None:
        """Record ``domain`` as verified by ``link_id``: False when it now is, True when
        it was already, None when the domain is no longer on the account. Runs inside
        the caller's store transaction."""


class Accounts:
    """Accounts, their links and sessions (see the module contract)."""

    def __init__(self, *, store: CAStore, outbox: Outbox, clock: Clock,
                 config: dict[str, Any], public_url: str, domains: DomainVerifier) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.config = config
        self.public_url = public_url
        self.domains = domains
        self._purged_at: datetime | None = None

    # -- the purge of unconfirmed accounts ------------------------------------------------
    def purge(self) -> None:
        """Drop accounts left unconfirmed for ``account_purge_hours`` (cheap; run often)."""
        now = self.clock.now()
        self._purged_at = now
        before = now - timedelta(hours=self.config["account_purge_hours"])
        for account_id in self.store.purge_unconfirmed(before):
            log.info("account_purged", account_id=account_id, reason="unconfirmed")

    def purge_due(self) -> bool:
        """True when the last :meth:`purge` is :data:`PURGE_EVERY` old (or the clock went
        back): requests call purge only then, not each a write transaction of its own."""
        last = self._purged_at
        now = self.clock.now()
        return last is None or not last <= now < last + PURGE_EVERY

    def purge_if_due(self) -> None:
        """:meth:`purge` when :meth:`purge_due`; repeat-safe."""
        if self.purge_due():
            self.purge()

    # -- join ----------------------------------------------------------------------------
    def join(self, email: str, name: str, passphrase: str,
             questions: list[tuple[str, str]]) -> tuple[dict[str, Any], bool]:
        """Create a pending account and mail its confirmation link; (body, created).

        Repeating the same join while pending returns the same account (no new mail).
        """
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise ApiError(422, "bad_request", f"{email!r} is not an email address",
                           field="email")
        if not name.strip():
            raise ApiError(422, "bad_request", "name is required", field="name")
        broken = check_passphrase(passphrase, name, email)
        if broken:
            raise ApiError(422, "passphrase_rejected",
                           f"the passphrase breaks {len(broken)} rule(s)",
                           rules=[v.as_dict() for v in broken])
        if len(questions) != 5 or any(not q.strip() or not a.strip() for q, a in questions):
            raise ApiError(422, "bad_request", "exactly five questions, each with an answer",
                           field="questions")
        if len({q.strip().lower() for q, _ in questions}) != 5:
            raise ApiError(422, "bad_request", "the five questions must differ",
                           field="questions")
        pw_hash = hash_secret(passphrase)
        answers = [(q.strip(), hash_secret(normalize_answer(a))) for q, a in questions]
        with self.store.transaction():
            existing = self.store.find_account(email=email)
            if existing and existing["status"] == "pending" \
                    and check_secret(passphrase, existing["pw_hash"]):
                link = self.store.latest_link(existing["id"], "account")
                log.info("join_repeated", account_id=existing["id"])
                return ({"account_id": existing["id"], "status": "pending",
                         "confirm_expires": link["expires_at"] if link else None}, False)
            if existing and existing["status"] == "rejected":
                self.store.delete_account(existing["id"])
            elif existing:
                raise ApiError(409, "account_exists",
                               f"an account for {email} exists already; log in or recover it")
            account_id = self.store.create_account(email, name.strip(), pw_hash, answers)
            expires = self.clock.now() + timedelta(hours=self.config["link_hours"])
            link_id, token = self.store.create_link("account", account_id, email, expires)
            url = f"{self.public_url}/account/confirm/{link_id}?token={token}"
            message = self.outbox.enqueue(email, "Confirm your certwright CA account", (
                f"Someone, hopefully you, asked for a CA account for {email}.\n\n"
                f"To confirm it, open this link within {self.config['link_hours']} hours:\n\n"
                f"{url}\n\nIf you did not ask for it, open the link and choose "
                '"I did not ask for this", or ignore this mail.\n'), kind="account_confirm",
                ref=account_id)
        delivery = self.outbox.deliver(message)  # a transient failure stays queued
        if delivery.status == "failed":
            self.store.delete_account(account_id)
            raise ApiError(502, "mail_undeliverable", f"mail to {email} not delivered: "
                           f"{delivery.reason}", reason=delivery.reason)
        self.store.record("account_joined", account_id, email)
        log.info("account_joined", account_id=account_id)
        return ({"account_id": account_id, "status": "pending",
                 "confirm_expires": format_instant(expires)}, True)

    # -- links ---------------------------------------------------------------------------
    def describe_link(self, link_id: str, token: str, kind: str) -> dict[str, Any]:
        """What a link would confirm, for the page; read-only. Raises ApiError when unusable."""
        link = self.store.find_link(link_id)
        if not link or link["kind"] != kind or not _token_ok(token, link):
            raise ApiError(404, "not_found", "no such request, or the link is incomplete")
        error = self._closed_error(link, token_ok=True)
        if error:
            raise error
        account = self.store.find_account(account_id=link["account_id"])
        return {"kind": kind, "request_id": link_id, "address": link["address"],
                "domain": link["domain"], "expires_at": link["expires_at"],
                "account_email": account["email"] if account else None}

    def _closed_error(self, link: dict[str, Any], *, token_ok: bool) -> ApiError | None:
        status = link["status"]
        if status == "open" and self.clock.now() >= parse_instant(link["expires_at"]):
            status = "expired"
        if status == "expired":
            return ApiError(410, "link_expired", "this link has expired; ask for a new one")
        if status == "cancelled":
            return ApiError(410, "link_cancelled", "this request was cancelled after too "
                            "many wrong tokens; ask for a new one")
        if status != "open":
            extra = {"outcome": status, "kind": link["kind"]} if token_ok else {}
            if token_ok and link["domain"]:
                extra["domain"] = link["domain"]
            return ApiError(410, "link_used", "this link has been used already", **extra)
        return None

    def confirm(self, link_id: str, token: str, action: str,
                kind: str | None = None) -> dict[str, Any]:
        """Verify or reject the request behind a link; see the module contract."""
        if action not in ("verify", "reject"):
            raise ApiError(422, "bad_request", "action must be 'verify' or 'reject'")
        with self.store.transaction():
            result = self._confirm_locked(link_id, token, action, kind)
        if isinstance(result, ApiError):
            raise result
        return result

    def _confirm_locked(self, link_id: str, token: str, action: str,
                        kind: str | None) -> dict[str, Any] | ApiError:
        # A refusal is returned, not raised, so what it recorded (a failure count, a
        # closed link) commits with the transaction.
        link = self.store.find_link(link_id)
        if not link or (kind and link["kind"] != kind):
            return ApiError(404, "not_found", f"no confirmation request {link_id!r}")
        bound = log.bind(link_id=link_id, account_id=link["account_id"], kind=link["kind"])
        good = _token_ok(token, link)
        closed = self._closed_error(link, token_ok=good)
        if closed:
            if closed.code == "link_expired" and link["status"] == "open":
                self.store.close_link(link_id, "expired")
            bound.info("link_refused", reason=closed.code)
            return closed
        if not good:
            failures = self.store.count_failure(link_id)
            left = max(MAX_TOKEN_FAILURES - failures, 0)
            if not left:
                self.store.close_link(link_id, "cancelled")
                self.store.record("link_cancelled", link["account_id"], link_id,
                                  "too many wrong tokens")
            bound.warning("link_bad_token", attempts_left=left)
            return ApiError(403, "bad_token", "the token does not match this request",
                            attempts_left=left)
        out: dict[str, Any] = {"kind": link["kind"]}
        if link["domain"]:
            out["domain"] = link["domain"]
        if action == "reject":
            self.store.close_link(link_id, "rejected")
            if link["kind"] == "account":
                self.store.set_account_status(link["account_id"], "rejected")
            self.store.record("link_rejected", link["account_id"], link_id,
                              link["domain"] or link["address"])
            bound.info("link_rejected")
            return {**out, "status": "rejected"}
        if link["kind"] == "account":
            account = self.store.find_account(account_id=link["account_id"])
            if account is None:
                return ApiError(410, "link_expired", "the account no longer exists")
            already = account["status"] == "active"
            if not already:
                self.store.activate_account(link["account_id"])
        else:
            verified = self.domains.mark_verified(link["account_id"], link["domain"], link_id)
            if verified is None:
                self.store.close_link(link_id, "cancelled")
                return ApiError(410, "link_cancelled", f"{link['domain']} was removed from "
                                "the account; add it and probe again")
            already = verified
        self.store.close_link(link_id, "verified")
        self.store.record("link_verified", link["account_id"], link_id,
                          link["domain"] or link["address"])
        bound.info("link_verified", already=already)
        return {**out, "status": "already_verified" if already else "verified"}

    # -- login ----------------------------------------------------------------------------
    def login(self, email: str, passphrase: str) -> dict[str, Any]:
        """A 1-hour API token for an active account."""
        account = self.store.find_account(email=email.strip().lower())
        if not check_secret(passphrase, account["pw_hash"] if account else _DUMMY_HASH) \
                or account is None:
            log.info("login_refused", reason="bad_credentials")
            raise ApiError(401, "bad_credentials", "unknown email or wrong passphrase")
        if account["status"] != "active":
            raise ApiError(403, "account_not_confirmed", "follow the link in the "
                           "confirmation mail first", account_id=account["id"])
        expires = self.clock.now() + timedelta(hours=SESSION_HOURS)
        token = self.store.create_session(account["id"], expires)
        log.info("login", account_id=account["id"])
        return {"token": token, "expires": format_instant(expires), "account_id": account["id"]}

    def authenticate(self, token: str) -> str:
        """The account id behind an API token; ApiError 401 when unknown or expired.

        Reads committed state only (never waits for a writer): safe on the event loop."""
        account_id = self.store.session_account(token) if token else None
        if account_id is None:
            raise ApiError(401, "unauthorized", "missing, unknown or expired bearer token; "
                           "POST /api/v1/login")
        return account_id


def _token_ok(token: str, link: dict[str, Any]) -> bool:
    return hmac.compare_digest(hash_token(token or ""), link["token_hash"])
