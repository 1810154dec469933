"""The store contract for the renewal schedule's memory, as tests (see ``state.contract``).

A back-end subclasses :class:`RenewalContract` beside ``StoreContract`` with the same
``make_store``. It checks that a renewal record round-trips every field, that putting one
name again replaces it, that the list is by name, that a missing name is None, that
``delete_renewal`` removes one name only (and a missing one quietly), that a rolled-back
transaction leaves nothing, and that the records outlive a reopening.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from certwright.state.base import Store
from certwright.state.contract import AT, Boom, opened, raises
from certwright.state.records import RenewalRecord


def renewal(name: str, **fields: object) -> RenewalRecord:
    """A renewal record with every field set (``fields`` override)."""
    values: dict[str, object] = {
        "attempts": 2, "next_at": "2026-02-01T00:00:00.000000Z",
        "last_error": "renewal run r9 failed: ca.sign refused", "run_id": "r9",
        "renews": "r1", "updated": AT}
    values.update(fields)
    return RenewalRecord(name=name, **values)  # type: ignore[arg-type]


class RenewalContract:
    """The renewal schedule's promises; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def _opened(self, tmp_path: Path) -> AbstractContextManager[Store]:
        return opened(self.make_store, tmp_path / "store")

    def test_a_renewal_round_trips_every_field(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_renewal(renewal("example.test"))
            assert store.find_renewal("example.test") == renewal("example.test")

    def test_put_renewal_replaces_and_lists_by_name(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            assert store.list_renewals() == []
            assert store.find_renewal("example.test") is None
            with store.transaction() as tx:
                for name in ("b.test", "a.test"):
                    tx.put_renewal(renewal(name))
                tx.put_renewal(renewal("b.test", attempts=0, next_at=None, last_error=None,
                                       run_id=None))
            assert [r.name for r in store.list_renewals()] == ["a.test", "b.test"]
            assert store.find_renewal("b.test") == renewal(
                "b.test", attempts=0, next_at=None, last_error=None, run_id=None)

    def test_delete_renewal_removes_that_name_only(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_renewal(renewal("a.test"))
                tx.put_renewal(renewal("b.test"))
            with store.transaction() as tx:
                tx.delete_renewal("a.test")
                tx.delete_renewal("missing.test")
            assert [r.name for r in store.list_renewals()] == ["b.test"]

    def test_a_rolled_back_put_leaves_no_renewal(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    tx.put_renewal(renewal("example.test"))
                    raise Boom
            raises(Boom, fail)
            assert store.find_renewal("example.test") is None

    def test_a_store_reopened_keeps_the_renewals(self, tmp_path: Path) -> None:
        make: Callable[[Path], Store] = self.make_store
        with opened(make, tmp_path / "store") as store, store.transaction() as tx:
            tx.put_renewal(renewal("example.test"))
        with opened(make, tmp_path / "store") as store:
            assert store.find_renewal("example.test") == renewal("example.test")
