"""The store contract for the daemons' heartbeats, as tests (see ``state.contract``).

A back-end subclasses :class:`DaemonContract` beside ``StoreContract`` with the same
``make_store``. It checks that a daemon record round-trips every field, that putting one
id again replaces it (a heartbeat), that several daemons have a row each, listed by id,
that ``delete_daemon`` removes one id only (and a missing one quietly), that a rolled-back
transaction leaves nothing, and that the rows outlive a reopening.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from certwright.state.base import Store
from certwright.state.contract import AT, Boom, opened, raises
from certwright.state.records import DaemonRecord


def daemon(daemon_id: str, **fields: object) -> DaemonRecord:
    """A daemon record with every field set (``fields`` override)."""
    values: dict[str, object] = {
        "host": "host-a.example.test", "pid": 4242, "started": AT,
        "heartbeat": "2026-01-01T00:00:10.000000Z", "interval": 10.0, "runs": 3,
        "leases": 0, "metrics": "http://127.0.0.1:9464/metrics", "version": "0.1.0"}
    values.update(fields)
    return DaemonRecord(id=daemon_id, **values)  # type: ignore[arg-type]


class DaemonContract:
    """The heartbeat table's promises; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def _opened(self, tmp_path: Path) -> AbstractContextManager[Store]:
        return opened(self.make_store, tmp_path / "store")

    def test_a_daemon_round_trips_every_field(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            assert store.list_daemons() == []
            with store.transaction() as tx:
                tx.put_daemon(daemon("host-a:4242"))
            assert store.list_daemons() == [daemon("host-a:4242")]

    def test_a_heartbeat_replaces_the_row_and_each_daemon_has_one(
            self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_daemon(daemon("host-b:7"))
                tx.put_daemon(daemon("host-a:4242"))
            later = daemon("host-a:4242", heartbeat="2026-01-01T00:00:20.000000Z", runs=0)
            with store.transaction() as tx:
                tx.put_daemon(later)
            assert store.list_daemons() == [later, daemon("host-b:7")]

    def test_delete_daemon_removes_that_id_only(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_daemon(daemon("a"))
                tx.put_daemon(daemon("b"))
            with store.transaction() as tx:
                tx.delete_daemon("a")
                tx.delete_daemon("missing")
            assert [d.id for d in store.list_daemons()] == ["b"]

    def test_a_rolled_back_heartbeat_leaves_nothing(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    tx.put_daemon(daemon("a"))
                    raise Boom
            raises(Boom, fail)
            assert store.list_daemons() == []

    def test_a_store_reopened_keeps_the_daemons(self, tmp_path: Path) -> None:
        with opened(self.make_store, tmp_path / "store") as store, \
                store.transaction() as tx:
            tx.put_daemon(daemon("a"))
        with opened(self.make_store, tmp_path / "store") as store:
            assert store.list_daemons() == [daemon("a")]
