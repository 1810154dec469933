"""The PostgreSQL store's reads of its inventory: certificates, renewals, daemons.

A mixin of :class:`state.postgres.PostgresStore` (its ``_rows``), kept apart so the store's
module stays small; rows are decoded as the SQLite store's are (``state._sqlite_tx``), so
``store migrate`` copies them unchanged.
"""
from __future__ import annotations

from typing import Any

from certwright.state import names as N
from certwright.state._sqlite_tx import certificate_from_row, daemon_from_row, renewal_from_row
from certwright.state.records import CertificateRecord, DaemonRecord, RenewalRecord


class RecordReads:
    """The inventory's reads of a store with ``_rows``."""

    def _rows(self, doing: str, sql: str, args: Any = (),
              table: str | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # the store's

    def find_certificate(self, name: str) -> CertificateRecord | None:
        rows = self._rows("reading the certificates from",
                          f"SELECT name, run_id, renew_at, body FROM {N.T_CERTIFICATES} "
                          f"WHERE name=%s", (name,))
        return certificate_from_row(rows[0]) if rows else None

    def list_certificates(self) -> list[CertificateRecord]:
        rows = self._rows("reading the certificates from",
                          f"SELECT name, run_id, renew_at, body FROM {N.T_CERTIFICATES} "
                          f'ORDER BY name COLLATE "C"')
        return [certificate_from_row(r) for r in rows]

    def find_renewal(self, name: str) -> RenewalRecord | None:
        rows = self._rows("reading the renewal schedule from",
                          f"SELECT name, next_at, body FROM {N.T_RENEWALS} WHERE name=%s",
                          (name,))
        return renewal_from_row(rows[0]) if rows else None

    def list_renewals(self) -> list[RenewalRecord]:
        rows = self._rows("reading the renewal schedule from",
                          f"SELECT name, next_at, body FROM {N.T_RENEWALS} "
                          f'ORDER BY name COLLATE "C"')
        return [renewal_from_row(r) for r in rows]

    def list_daemons(self) -> list[DaemonRecord]:
        rows = self._rows("reading the daemons from", f"SELECT id, heartbeat, body FROM "
                          f'{N.T_DAEMONS} ORDER BY id COLLATE "C"')
        return [daemon_from_row(r) for r in rows]
