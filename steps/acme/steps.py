"""ACME (RFC 8555) steps: account, order, challenge, finalize, download.

Read in protocol order. Each step reloads what it needs from disk (the account under
``state_dir/acme/accounts/``, the order URL in ``run_dir/acme-order.json``) and asks the CA
for the current state before acting, so every step can be called again with the same
``idempotency_key`` (after a crash too) without making the CA do anything twice:

* ``acme.account`` reuses the stored account; its key is written before registering, so a
  crash mid-registration recovers the same account.
* ``acme.order`` reuses the run's order while it is pending/ready/processing/valid; when
  recovering with no saved order it adopts a matching usable order from the account's list.
* ``acme.challenge`` (in :mod:`.authorize`) skips valid authorizations and answers only
  pending challenges.
* ``acme.finalize`` finalizes only a ``ready`` order; a processing/valid one is just polled.
* ``acme.download`` rewrites the same files from the valid order.
"""
from __future__ import annotations

import email.utils
import ipaddress
from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from acme import errors as acme_errors
from acme import messages
from josepy.json_util import field as jose_field

from certwright.clock import format_instant
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.acme.authorize import Challenge
from certwright.steps.acme.client import (
    AcmeSession,
    account_folder,
    account_locked,
    as_step_error,
    check_directory,
    check_params,
    load_account,
    read_json,
    session_for,
    step_schema,
    write_json,
)
from certwright.steps.acme.issue import Download, Finalize, open_session, sleep_of
from certwright.steps.acme.kept import (
    ORDER_FILE,
    account_of,
    keep_account,
    keep_order,
    restore_account,
    restore_order,
)
from certwright.steps.acme.network import problem_text
from certwright.steps.acme.renewal import serial_of

__all__ = ["Account", "Challenge", "Download", "Finalize", "Order", "list_orders", "open_session"]

USABLE = ("pending", "ready", "processing", "valid")


class Account(BaseStep):
    """Create the ACME account for (directory, contact), or reuse the stored one.

    Outputs ``account_url`` and ``reused``. Raises PermanentError when the CA refuses
    (terms not agreed, EAB required or wrong), StepError when it cannot be reached.
    Repeat calls reuse the account; after a crash during registration the saved key finds
    the account the CA already made. Concurrent calls for the same directory and contact
    (many runs in one engine, or several processes) are serialised by the account's lock,
    so they share one key and one account.
    """

    name: ClassVar[str] = "acme.account"
    description: ClassVar[str] = "register (or reuse) an ACME account"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = step_schema({
        "agree_tos": {"type": "boolean", "default": True},
        "key_type": {"enum": ["ec", "rsa"], "default": "ec"},
        "key_size": {"type": "integer", "minimum": 2048, "default": 2048},
        "eab_kid": {"type": "string"},
        "eab_hmac_key": {"type": "string"},
    })

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        directory = check_directory(p)
        log = ctx.log.bind(step=self.name, directory=directory)
        doing = f"registering an ACME account at {directory}"
        restore_account(ctx, p)  # another host may have registered it (kept.py)
        # A registered account is only queried, without the lock, so that many runs
        # starting at once do not queue behind each other (the key never changes once
        # written, and account.json is replaced atomically).
        if (account_folder(ctx.state_dir, directory, p.get("contact")) / "account.key").exists():
            account = load_account(ctx.state_dir, p)
            if account.url and self._query(ctx, account, log, doing) is not None:
                return self._ready(ctx, account, directory, p, account.url, False, log)
        # Making a key and registering happen under the account's lock: concurrent runs
        # (one engine, or several processes) must not each make a key and an account.
        with account_locked(ctx.state_dir, p):
            account = load_account(ctx.state_dir, p, create_key=True)
            url = self._query(ctx, account, log, doing) if account.url else None
            fresh = url is None
            if url is None:
                try:
                    url = self._register(self._session(ctx, account), p)
                except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
                    raise as_step_error(exc, doing) from exc
            return self._ready(ctx, account, directory, p, url, fresh, log)

    @staticmethod
    def _session(ctx: StepContext, account: Any) -> AcmeSession:
        """A session of its own, for registering (the cached ones are for known accounts)."""
        verify: str | bool = str(ctx.params["ca_bundle"]) if ctx.params.get("ca_bundle") else True
        return AcmeSession(check_directory(ctx.params), account, verify, sleep_of(ctx),
                           ctx.clock.now())

    def _query(self, ctx: StepContext, account: Any, log: Any, doing: str) -> str | None:
        """The stored account's URL if the CA still knows it as valid, else None.

        A POST-as-GET of the account URL (RFC 8555 section 7.3.2's way to fetch an
        account) on the session every later step of the run uses: one request on the
        connection kept for the run, where a newAccount POST with onlyReturnExisting
        would need a session, a directory and a nonce of its own."""
        try:
            found = session_for(ctx.services, ctx.params, account, ctx.clock.now()).post(
                account.url, None).json()
        except messages.Error as err:
            if err.code in ("accountDoesNotExist", "unauthorized"):
                log.info("acme_account_forgotten", account_url=account.url, problem=err.code)
                return None
            raise as_step_error(err, doing) from err
        except (acme_errors.Error, requests.RequestException, ValueError) as exc:
            raise as_step_error(exc, doing) from exc
        if found.get("status", "valid") != "valid":
            log.info("acme_account_forgotten", account_url=account.url,
                     status=found.get("status"))
            return None
        return str(account.url)

    @staticmethod
    def _ready(ctx: StepContext, account: Any, directory: str, p: Mapping[str, Any], url: str,
               fresh: bool, log: Any) -> Done:
        if fresh or url != account.url:
            write_json(account.folder / "account.json",
                       {"directory": directory, "contact": p.get("contact"), "url": url})
        log.info("acme_account_ready", account_url=url, reused=not fresh)
        return Done({"account_url": url, "reused": not fresh}, kept=keep_account(ctx, account))

    @staticmethod
    def _register(session: AcmeSession, p: Mapping[str, Any]) -> str:
        meta = session.directory.meta
        if meta.terms_of_service and not p.get("agree_tos", True):
            raise PermanentError(f"the CA requires agreeing to its terms "
                                 f"({meta.terms_of_service}); set agree_tos: true")
        eab = None
        if p.get("eab_kid") or p.get("eab_hmac_key"):
            check_params(p, ("eab_kid", "eab_hmac_key"))
            eab = messages.ExternalAccountBinding.from_data(
                session.account.key.public_key(), p["eab_kid"], p["eab_hmac_key"],
                session.directory)
        elif meta.external_account_required:
            raise PermanentError(f"the CA at {session.url} requires external account binding: "
                                 "set eab_kid and eab_hmac_key")
        reg = messages.NewRegistration.from_data(
            email=p.get("contact") or None, terms_of_service_agreed=bool(p.get("agree_tos", True)),
            external_account_binding=eab)
        try:
            return str(session.client.new_account(reg).uri)
        except acme_errors.ConflictError as conflict:  # the key already has an account
            return str(conflict.location)


def _order_outputs(ctx: StepContext, url: str, order: messages.Order, reused: bool,
                   server_date: str | None) -> Done:
    """The order as outputs. ``expires`` is the order's expiry on *our* clock: the time the
    CA leaves (its ``expires`` minus its ``Date``) added to our now, so a skewed clock here
    (or ``CERTWRIGHT_NOW``) neither expires a live order nor keeps a dead one;
    ``ca_expires`` is the CA's own instant."""
    expires = None
    if order.expires:
        expires = order.expires
        try:
            said = email.utils.parsedate_to_datetime(server_date) if server_date else None
        except (TypeError, ValueError, IndexError):
            said = None
        if said is not None and said.tzinfo is not None:
            expires = ctx.clock.now() + (order.expires - said)
    return Done({
        "order_url": url, "status": str(order.status.name), "reused": reused,
        "expires": format_instant(expires) if expires else None,
        "ca_expires": format_instant(order.expires) if order.expires else None,
        "authorizations": list(order.authorizations or ())}, kept=keep_order(ctx))


def _identifiers(domains: list[str]) -> list[messages.Identifier]:
    out: dict[str, messages.Identifier] = {}
    for d in domains:
        value = str(d).strip().lower().rstrip(".")
        try:
            ipaddress.ip_address(value)
            typ = messages.IDENTIFIER_IP
        except ValueError:
            typ = messages.IDENTIFIER_FQDN
        out.setdefault(value, messages.Identifier(typ=typ, value=value))
    return list(out.values())


def refuse_wildcards(names: list[str], challenge: str) -> None:
    """PermanentError, before any order is placed, when a wildcard among ``names`` is to be
    validated by a challenge other than dns-01: RFC 8555 section 7.1.3 and the CAs (Let's
    Encrypt, Pebble) offer only dns-01 for a wildcard's authorization, so the order could
    never become valid. An empty ``challenge`` (not said) checks nothing."""
    wild = [n for n in names if n.startswith("*.")]
    if wild and challenge and challenge != "dns-01":
        raise PermanentError(
            f"{', '.join(wild)}: a wildcard cannot be validated by {challenge}, only by "
            f"dns-01 (RFC 8555 section 7.1.3): use challenge dns-01 with a dns_hook "
            f"(--set challenge=dns-01 --set dns_hook=...), or leave the wildcard out")


def list_orders(session: AcmeSession) -> list[str]:
    """URLs of the account's orders (RFC 8555 §7.1.2.1), following ``next`` links.

    Returns [] when the CA does not list orders (Let's Encrypt does not).
    """
    account = session.post(session.account.url or "", None).json()
    url, urls = account.get("orders"), list[str]()
    while url and len(urls) < 10000:
        resp = session.post(url, None)
        urls.extend(resp.json().get("orders", []))
        url = resp.links.get("next", {}).get("url")
    return urls


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (the acme library's lacks it)."""

    replaces: str | None = jose_field("replaces", omitempty=True)


def _refuses_replaces(err: messages.Error) -> bool:
    """Whether a newOrder problem is the CA refusing ``replaces`` (RFC 9773 section 5:
    alreadyReplaced, or a malformed/400 problem naming it): then we order without it."""
    return err.code == "alreadyReplaced" or (
        err.code in ("malformed", "unauthorized") and "replaces" in (err.detail or ""))


def new_order(session: AcmeSession, idents: list[messages.Identifier], replaces: str,
              log: Any) -> tuple[requests.Response, dict[str, Any]]:
    """POST newOrder, with ``replaces`` when given and the CA speaks ARI; a refused
    ``replaces`` is logged and the order sent once more without it. Returns the answer and
    the outputs saying what was replaced (``replaces``, ``replaced_serial``,
    ``replaces_accepted``; empty when nothing was)."""
    url = session.directory["newOrder"]
    try:
        session.directory["renewalInfo"]
    except KeyError:
        replaces = ""  # a CA without ARI (Pebble 2.4) may refuse a field it does not know
    if not replaces:
        return session.post(url, messages.NewOrder(identifiers=idents)), {}
    told = {"replaces": replaces, "replaced_serial": serial_of(replaces) or ""}
    try:
        resp = session.post(url, _NewOrder(identifiers=idents, replaces=replaces))
    except (messages.Error, acme_errors.ConflictError) as err:
        # alreadyReplaced comes as 409 Conflict, which the acme library raises as a
        # ConflictError without the problem document
        if isinstance(err, messages.Error) and not _refuses_replaces(err):
            raise
        problem = (problem_text(err) if isinstance(err, messages.Error)
                   else "409 Conflict (alreadyReplaced)")
        log.warning("acme_replaces_refused", replaces=replaces, problem=problem,
                    action="ordering again without replaces")
        return (session.post(url, messages.NewOrder(identifiers=idents)),
                {**told, "replaces_accepted": False})
    return resp, {**told, "replaces_accepted": True}


class Order(BaseStep):
    """Open an order for ``domains``, or reuse the run's order while it is usable.

    Outputs ``order_url``, ``status``, ``expires``, ``authorizations`` (and ``reused``).
    The order URL is saved in ``run_dir/acme-order.json`` before the step returns. Never
    opens a second order while the saved one is pending, ready, processing or valid.
    """

    name: ClassVar[str] = "acme.order"
    description: ClassVar[str] = "open (or resume) an ACME order"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = step_schema(
        {"domains": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
         "challenge": {"type": "string", "description": "the challenge type the order will "
                       "be validated by: a wildcard is refused unless it is dns-01"},
         "replaces": {"type": "string", "description": "the RFC 9773 certID of the "
                      "certificate this order renews (sent only to a CA with renewalInfo)"}},
        ("directory", "domains"))

    def run(self, ctx: StepContext) -> Done:
        check_params(ctx.params, ("directory", "domains"))
        idents = _identifiers(list(ctx.params["domains"]))
        wanted = sorted(i.value for i in idents)
        refuse_wildcards(wanted, str(ctx.params.get("challenge") or ""))
        account = account_of(ctx, ctx.params)
        if not account.url:
            raise PermanentError("no registered ACME account: run acme.account first")
        session = session_for(ctx.services, ctx.params, account, ctx.clock.now())
        log = ctx.log.bind(step=self.name, domains=wanted)
        path = ctx.run_dir / ORDER_FILE
        restore_order(ctx)
        saved = read_json(path)
        try:
            candidates = []
            if (saved and saved.get("account_url") == account.url
                    and saved.get("identifiers") == wanted):
                candidates.append(saved["order_url"])
            elif saved is None and ctx.recovering:
                candidates.extend(reversed(list_orders(session)))  # newest last in Pebble
            for url in candidates:
                order = self._find_usable(session, url, wanted)
                if order is not None:
                    self._save(ctx, url, account.url, wanted)
                    log.info("acme_order_reused", order_url=url, status=order.status.name)
                    return _order_outputs(ctx, url, order, True, session.net.last_date())
            resp, replaced = new_order(session, idents, str(ctx.params.get("replaces") or ""),
                                       log)
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise as_step_error(exc, f"opening an ACME order for {', '.join(wanted)} "
                                     f"at {session.url}") from exc
        url = resp.headers.get("Location")
        if not url:
            raise PermanentError(f"the CA at {session.url} answered newOrder without a Location")
        self._save(ctx, url, account.url, wanted)
        order = messages.Order.from_json(resp.json())
        log.info("acme_order_opened", order_url=url, status=order.status.name)
        return Done({**_order_outputs(ctx, url, order, False, resp.headers.get("Date")).outputs,
                     **replaced}, kept=keep_order(ctx))

    @staticmethod
    def _find_usable(session: AcmeSession, url: str, wanted: list[str]) -> messages.Order | None:
        """The order at ``url`` if it can still be used; None if it is gone or finished.

        Only the CA saying the order does not exist (404) counts as gone: any other error
        (a 500, a rate limit, a network failure) propagates and the step is retried, so a
        CA that is merely struggling never makes us open a second order beside the first.
        """
        try:
            order = session.order(url)
        except messages.Error:
            if session.net.last_status() in (404, 410):
                return None  # the CA no longer knows it: open a new one
            raise
        if order.status.name not in USABLE:
            return None
        if sorted(i.value for i in order.identifiers) != wanted:
            return None
        return order

    @staticmethod
    def _save(ctx: StepContext, url: str, account_url: str, wanted: list[str]) -> None:
        write_json(ctx.run_dir / ORDER_FILE, {"order_url": url, "account_url": account_url,
                                              "identifiers": wanted, "key": ctx.idempotency_key})
