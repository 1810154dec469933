"""The store contract for a run's host, as tests (see ``state.contract``).

A back-end subclasses :class:`HostContract` beside ``StoreContract`` with the same
``make_store``. It checks that a run's ``host`` and ``wants_host`` round-trip through
``put_run`` (in ``find_run``, ``load_run`` and ``list_runs``), that a run put without them
reads back with the defaults (no host, waiting for none), that a later ``put_run`` clears
``wants_host``, and that ``run_ids(..., host=H)`` leaves out the runs waiting for another
host while ``host=None`` lists them all: the filter an engine of host H starts from.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from certwright.state.base import Store
from certwright.state.contract import Boom, opened, raises, run
from certwright.state.records import RUNNING, WAITING


class HostContract:
    """The runs table's host columns; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def _opened(self, tmp_path: Path) -> AbstractContextManager[Store]:
        return opened(self.make_store, tmp_path / "store")

    def test_host_and_wants_host_round_trip(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING, host="web1.example.test",
                               wants_host="web1.example.test"))
                tx.put_run(run("r2", WAITING, host="web2.example.test"))
            r1, r2 = store.load_run("r1"), store.load_run("r2")
            assert (r1.host, r1.wants_host) == ("web1.example.test", "web1.example.test")
            assert (r2.host, r2.wants_host) == ("web2.example.test", None)
            assert [(r.id, r.host, r.wants_host) for r in store.list_runs()] == [
                ("r1", "web1.example.test", "web1.example.test"),
                ("r2", "web2.example.test", None)]

    def test_a_run_put_without_a_host_reads_back_with_none(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING))
            found = store.find_run("r1")
            assert found is not None and (found.host, found.wants_host) == ("", None)

    def test_putting_the_run_again_replaces_wants_host(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING, host="a", wants_host="a"))
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING, host="b"))
            again = store.load_run("r1")
            assert (again.host, again.wants_host) == ("b", None)

    def test_a_rolled_back_move_leaves_the_host(self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING, host="a", wants_host="a"))

            def move() -> None:
                with store.transaction() as tx:
                    tx.put_run(run("r1", RUNNING, host="b", wants_host="b"))
                    raise Boom
            raises(Boom, move)
            kept = store.load_run("r1")
            assert (kept.host, kept.wants_host) == ("a", "a")

    def test_run_ids_for_a_host_leave_out_runs_waiting_for_another(
            self, tmp_path: Path) -> None:
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("free", RUNNING, host="a"))
                tx.put_run(run("mine", RUNNING, host="a", wants_host="a"))
                tx.put_run(run("theirs", RUNNING, host="b", wants_host="b"))
                tx.put_run(run("parked", WAITING, host="b"))
            assert {rid for rid, _ in store.run_ids([RUNNING], host="a")} == {"free", "mine"}
            assert {rid for rid, _ in store.run_ids([RUNNING], host="b")} == {"free",
                                                                                "theirs"}
            assert {rid for rid, _ in store.run_ids([RUNNING])} == {"free", "mine", "theirs"}
            assert {rid for rid, _ in store.run_ids([RUNNING, WAITING], host="c")} == {
                "free", "parked"}
