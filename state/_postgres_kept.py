"""The PostgreSQL store's reads of what it keeps sealed: a run's secrets and artefacts.

A mixin of :class:`state.postgres.PostgresStore` (its ``_rows`` and ``sealer``), kept apart
so the store's module stays small; the rows are encoded by :mod:`state.artefacts`, as the
SQLite store encodes them, so ``store migrate`` copies them unchanged (sealed ones open
with the same store key on either side).
"""
from __future__ import annotations

from typing import Any

from certwright.state import names as N
from certwright.state.artefacts import Artefact, artefact_from_body, secrets_from_body
from certwright.state.sealing import Sealer


class KeptReads:
    """``load_secrets`` and ``artefacts`` of a store with ``_rows`` and ``sealer``."""

    sealer: Sealer | None

    def _rows(self, doing: str, sql: str, args: Any = (),
              table: str | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # the store's

    def load_secrets(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("reading secrets from",
                          f"SELECT body FROM {N.T_SECRETS} WHERE run_id=%s", (run_id,),
                          N.T_SECRETS)
        return secrets_from_body(run_id, rows[0][0], self.sealer) if rows else None

    def artefacts(self, run_id: str, name: str | None = None) -> list[Artefact]:
        sql = f"SELECT name, body FROM {N.T_ARTEFACTS} WHERE run_id=%s"
        args: tuple[str, ...] = (run_id,)
        if name is not None:
            sql, args = sql + " AND name=%s", (run_id, name)
        rows = self._rows("reading what runs made from", sql + " ORDER BY name", args)
        return [artefact_from_body(run_id, r[0], r[1], self.sealer) for r in rows]
