"""The ACME server's durable state in the CA's store: accounts, orders, authorizations,
challenges (tables ``acme_*`` in the CA's SQLite file).

Contract: every method is one transaction of the CA's store (``CAStore.transaction``);
callers group several in one ``with store.transaction()`` when a check and its action
must be atomic (a challenge answered once, an order finalized once). Rows come back as
dicts; JSON columns (``jwk``, ``contact``, ``identifiers``, ``error``) are decoded.
Instants are ISO 8601 UTC strings, as everywhere in the CA's store.

:class:`CommittedAcmeStore` reads the same tables as committed, through the CA store's
read connection (safe on the event loop), and raises :class:`NeedsWriter` where a read
would have to write.

Accounts are keyed by the RFC 7638 thumbprint of their key (unique: one key, one
account). Authorizations belong to one account; an order lists its authorizations in
``acme_order_authz`` (a valid authorization is reused by later orders of the account
until it expires).
"""
from __future__ import annotations

import json
import secrets
from typing import Any

from certwright.ca.store import CAStore

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS acme_accounts (
        id TEXT PRIMARY KEY, thumbprint TEXT NOT NULL UNIQUE, jwk TEXT NOT NULL,
        status TEXT NOT NULL, contact TEXT NOT NULL, created_at TEXT NOT NULL,
        ca_account_id TEXT)""",
    """CREATE TABLE IF NOT EXISTS acme_orders (
        id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES acme_accounts(id),
        status TEXT NOT NULL, identifiers TEXT NOT NULL, expires TEXT NOT NULL,
        error TEXT, serial TEXT, replaces TEXT, created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS acme_orders_account ON acme_orders(account_id, created_at)",
    """CREATE TABLE IF NOT EXISTS acme_authz (
        id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES acme_accounts(id),
        identifier TEXT NOT NULL, wildcard INTEGER NOT NULL, status TEXT NOT NULL,
        expires TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS acme_authz_reuse ON acme_authz(account_id, identifier, status)",
    """CREATE TABLE IF NOT EXISTS acme_order_authz (
        order_id TEXT NOT NULL REFERENCES acme_orders(id),
        authz_id TEXT NOT NULL REFERENCES acme_authz(id), PRIMARY KEY (order_id, authz_id))""",
    """CREATE TABLE IF NOT EXISTS acme_challenges (
        id TEXT PRIMARY KEY, authz_id TEXT NOT NULL REFERENCES acme_authz(id),
        type TEXT NOT NULL, token TEXT NOT NULL, status TEXT NOT NULL, validated TEXT,
        error TEXT)""",
    "CREATE INDEX IF NOT EXISTS acme_challenges_authz ON acme_challenges(authz_id)",
    "CREATE INDEX IF NOT EXISTS acme_orders_replaces ON acme_orders(replaces)",
    # external account binding keys (ca/acme/eab.py): one binds one ACME account, once
    """CREATE TABLE IF NOT EXISTS acme_eab_keys (
        kid TEXT PRIMARY KEY, ca_account_id TEXT NOT NULL, hmac_key TEXT NOT NULL,
        created_at TEXT NOT NULL, expires TEXT NOT NULL, bound_to TEXT)""",
    # an operator's renewal window for one certificate (RFC 9773; ca renewal-window)
    """CREATE TABLE IF NOT EXISTS acme_renewal_windows (
        serial TEXT PRIMARY KEY, start TEXT NOT NULL, end TEXT NOT NULL,
        set_at TEXT NOT NULL)""",
)
_JSON = ("jwk", "contact", "identifiers", "error")


def _decode(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    for col in _JSON:
        if col in row and row[col] is not None:
            row[col] = json.loads(row[col])
    return row


def new_id() -> str:
    """A random, URL-safe id (128 bits)."""
    return secrets.token_urlsafe(16)


class AcmeStore:
    """The ``acme_*`` tables of one CA store (see the module contract)."""

    def __init__(self, store: CAStore) -> None:
        self.store = store
        with store.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def transaction(self) -> Any:
        """The CA store's transaction (nested calls join it)."""
        return self.store.transaction()

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        with self.store.transaction() as db:
            row = db.execute(sql, args).fetchone()
        return _decode(dict(row)) if row else None

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self.store.transaction() as db:
            rows = db.execute(sql, args).fetchall()
        return [_decode(dict(r)) or {} for r in rows]

    def _exec(self, sql: str, *args: Any) -> int:
        with self.store.transaction() as db:
            return int(db.execute(sql, args).rowcount)

    # -- accounts ------------------------------------------------------------------------
    def find_account(self, *, account_id: str | None = None,
                     thumbprint: str | None = None) -> dict[str, Any] | None:
        """An account by id or by key thumbprint; None when there is none."""
        if account_id is not None:
            return _decode(self.store.read_one("SELECT * FROM acme_accounts WHERE id=?",
                                               account_id))
        return self._one("SELECT * FROM acme_accounts WHERE thumbprint=?", thumbprint)

    def create_account(self, thumbprint: str, jwk: dict[str, Any], contact: list[str],
                       ca_account_id: str | None = None) -> dict[str, Any]:
        """A new valid account, or the one that holds this key already (the caller looks
        first; this makes a race of two newAccount calls answer the same account)."""
        with self.store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO acme_accounts VALUES (?,?,?,'valid',?,?,?)",
                       ("acme_" + new_id(), thumbprint, json.dumps(jwk), json.dumps(contact),
                        self.store.now(), ca_account_id))
            found = self._one("SELECT * FROM acme_accounts WHERE thumbprint=?", thumbprint)
        return found or {}

    def update_account(self, account_id: str, **fields: Any) -> None:
        """Set ``status``, ``contact``, ``jwk``/``thumbprint`` or ``ca_account_id``."""
        for col in ("contact", "jwk"):
            if col in fields:
                fields[col] = json.dumps(fields[col])
        sets = ", ".join(f"{col}=?" for col in fields)
        self._exec(f"UPDATE acme_accounts SET {sets} WHERE id=?", *fields.values(), account_id)

    # -- orders --------------------------------------------------------------------------
    def create_order(self, account_id: str, identifiers: list[dict[str, str]],
                     authz_ids: list[str], expires: str, replaces: str | None) -> str:
        order_id = new_id()
        with self.store.transaction() as db:
            db.execute("INSERT INTO acme_orders (id, account_id, status, identifiers, "
                       "expires, replaces, created_at) VALUES (?,?,'pending',?,?,?,?)",
                       (order_id, account_id, json.dumps(identifiers), expires, replaces,
                        self.store.now()))
            db.executemany("INSERT INTO acme_order_authz VALUES (?,?)",
                           [(order_id, a) for a in authz_ids])
        return order_id

    def find_order(self, order_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM acme_orders WHERE id=?", order_id)

    def order_authz(self, order_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT a.* FROM acme_authz a JOIN acme_order_authz o ON "
                         "o.authz_id=a.id WHERE o.order_id=? ORDER BY a.identifier", order_id)

    def set_order(self, order_id: str, status: str, *, serial: str | None = None,
                  error: dict[str, Any] | None = None) -> None:
        self._exec("UPDATE acme_orders SET status=?, serial=coalesce(?, serial), "
                   "error=coalesce(?, error) WHERE id=?", status, serial,
                   json.dumps(error) if error else None, order_id)

    def account_orders(self, account_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT id, status FROM acme_orders WHERE account_id=? "
                         "ORDER BY created_at, id", account_id)

    def replacing_order(self, ident: str) -> dict[str, Any] | None:
        """An order, not invalid, that replaces the certificate ``ident`` (a certID)."""
        return self._one("SELECT * FROM acme_orders WHERE replaces=? AND status!='invalid' "
                         "LIMIT 1", ident)

    # -- external account binding keys -----------------------------------------------
    def create_eab_key(self, kid: str, ca_account_id: str, hmac_key: str,
                       expires: str) -> None:
        self._exec("INSERT INTO acme_eab_keys VALUES (?,?,?,?,?,NULL)", kid, ca_account_id,
                   hmac_key, self.store.now(), expires)

    def find_eab_key(self, kid: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM acme_eab_keys WHERE kid=?", kid)

    def use_eab_key(self, kid: str, thumbprint: str) -> bool:
        """Mark the key bound to the account of ``thumbprint``; False when it was already."""
        return self._exec("UPDATE acme_eab_keys SET bound_to=? WHERE kid=? AND bound_to IS "
                          "NULL", thumbprint, kid) == 1

    # -- renewal windows -----------------------------------------------------------------
    def set_window(self, serial: str, start: str, end: str) -> None:
        """Set (or replace) the operator's window for ``serial``."""
        self._exec("INSERT OR REPLACE INTO acme_renewal_windows VALUES (?,?,?,?)", serial,
                   start, end, self.store.now())

    def find_window(self, serial: str) -> dict[str, Any] | None:
        return self.store.read_one("SELECT * FROM acme_renewal_windows WHERE serial=?",
                                   serial)

    # -- authorizations and challenges ---------------------------------------------------
    def reusable_authz(self, account_id: str, identifier: str, wildcard: bool,
                       now: str) -> dict[str, Any] | None:
        """A valid, unexpired authorization of the account for ``identifier``."""
        return self._one("SELECT * FROM acme_authz WHERE account_id=? AND identifier=? AND "
                         "wildcard=? AND status='valid' AND expires>? ORDER BY expires DESC "
                         "LIMIT 1", account_id, identifier, int(wildcard), now)

    def create_authz(self, account_id: str, identifier: str, wildcard: bool, expires: str,
                     challenges: list[str], status: str = "pending") -> str:
        """A new authorization with one challenge of each type in ``challenges``, all
        sharing one token (RFC 8555 section 8: the key authorization is per token)."""
        authz_id = new_id()
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as db:
            db.execute("INSERT INTO acme_authz VALUES (?,?,?,?,?,?,?)",
                       (authz_id, account_id, identifier, int(wildcard), status, expires,
                        self.store.now()))
            db.executemany("INSERT INTO acme_challenges (id, authz_id, type, token, status) "
                           "VALUES (?,?,?,?,'pending')",
                           [(new_id(), authz_id, kind, token) for kind in challenges])
        return authz_id

    def find_authz(self, authz_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM acme_authz WHERE id=?", authz_id)

    def set_authz(self, authz_id: str, status: str, expires: str | None = None) -> None:
        self._exec("UPDATE acme_authz SET status=?, expires=coalesce(?, expires) WHERE id=?",
                   status, expires, authz_id)

    def challenges(self, authz_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM acme_challenges WHERE authz_id=? ORDER BY type",
                         authz_id)

    def find_challenge(self, challenge_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM acme_challenges WHERE id=?", challenge_id)

    def set_challenge(self, challenge_id: str, status: str, *, validated: str | None = None,
                      error: dict[str, Any] | None = None) -> None:
        self._exec("UPDATE acme_challenges SET status=?, validated=?, error=? WHERE id=?",
                   status, validated, json.dumps(error) if error else None, challenge_id)

    def orders_of_authz(self, authz_id: str) -> list[str]:
        return [r["order_id"] for r in self._all(
            "SELECT order_id FROM acme_order_authz WHERE authz_id=?", authz_id)]


class NeedsWriter(Exception):
    """A :class:`CommittedAcmeStore` was asked to write: do this work with the writer."""


class _ReadSide:
    """The read side of a CA store: its read connection (committed state) and its
    clock; asking for a transaction raises :class:`NeedsWriter`."""

    def __init__(self, store: CAStore) -> None:
        self._store = store

    def read_one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return self._store.read_one(sql, *args)

    def read_all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self._store.read_all(sql, *args)

    def now(self) -> str:
        return self._store.now()

    def transaction(self) -> Any:
        raise NeedsWriter("a transaction")


class CommittedAcmeStore(AcmeStore):
    """The ``acme_*`` tables as committed, read through the CA store's read connection,
    which never waits for a writer (WAL), so it may be used on the event loop: every read
    of :class:`AcmeStore`, and :class:`NeedsWriter` for anything that would write."""

    def __init__(self, store: CAStore) -> None:  # the writer made the tables
        self.store = _ReadSide(store)  # type: ignore[assignment]

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return _decode(self.store.read_one(sql, *args))

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [_decode(r) or {} for r in self.store.read_all(sql, *args)]

    def _exec(self, sql: str, *args: Any) -> int:
        raise NeedsWriter(sql.split(" ", 1)[0])
