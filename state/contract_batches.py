"""The store contract for big transactions, as tests (see ``state.contract``).

A daemon's pump is one transaction that writes thousands of journal entries and run rows,
and clears and sets the timers and correlations of every run that enters a state. A store
may buffer such writes and send them in groups, so this suite checks that what comes back
is what was written, in the order it was written: entries and runs more than one group
holds (sizes around a group's, whatever it is), and clears and adds of timers and
correlations of one run interleaved, with a read in the middle of the transaction. A
back-end subclasses :class:`BatchContract` beside ``StoreContract`` with the same
``make_store``.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from certwright.state.base import Store
from certwright.state.contract import AT, entry, opened, run
from certwright.state.records import RUNNING

RUNS = 1203  # more runs than a group of a few hundred rows, and not a multiple of one


class BatchContract:
    """Big transactions' writes; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        raise NotImplementedError

    def _opened(self, tmp_path: Path) -> AbstractContextManager[Store]:
        return opened(self.make_store, tmp_path / "store")

    def test_thousands_of_entries_and_runs_in_one_transaction_come_back(
            self, tmp_path: Path) -> None:
        """Three entries and a run row for each of 1,203 runs, in one transaction: every
        entry reads back with its seq and data, in order, and every run with its fields;
        then a second such transaction replaces every run row."""
        ids = [f"r{i}" for i in range(RUNS)]
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                seqs = {rid: [tx.append(entry(rid, n)) for n in range(3)] for rid in ids}
                for i, rid in enumerate(ids):
                    tx.put_run(run(rid, RUNNING, state=f"s{i % 7}", seq=seqs[rid][-1]))
            every = [s for rid in ids for s in seqs[rid]]
            assert len(set(every)) == len(every)
            for rid in (ids[0], ids[499], ids[500], ids[1000], ids[-1]):
                assert [(e.seq, e.data["n"]) for e in store.journal(rid)] == list(
                    zip(seqs[rid], range(3), strict=True))
            got = {r.id: r for r in store.list_runs()}
            assert len(got) == RUNS
            assert all(got[rid] == run(rid, RUNNING, state=f"s{i % 7}", seq=seqs[rid][-1])
                       for i, rid in enumerate(ids))
            with store.transaction() as tx:
                for rid in ids:
                    tx.put_run(run(rid, RUNNING, state="later"))
            assert {r.state for r in store.list_runs()} == {"later"}

    def test_clears_and_adds_of_timers_and_correlations_keep_their_order(
            self, tmp_path: Path) -> None:
        """In one transaction, for many runs: clear a run's timers then add one, set its
        correlations then clear them, clear them then set others; a read in the middle
        sees what came before it; after the commit, what the last write of each said."""
        ids = [f"r{i}" for i in range(600)]
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                for rid in ids:
                    tx.add_timer(rid, 1, "timeout", AT)
                    tx.set_correlations(rid, 1, [f"mail:{rid}@x.test"])
            with store.transaction() as tx:
                for i, rid in enumerate(ids):
                    tx.clear_timers(rid)
                    if i % 2:
                        tx.add_timer(rid, 2, "wake", AT)
                    tx.set_correlations(rid, 2, [])
                    if i % 3 == 0:
                        tx.set_correlations(rid, 2, [f"token:{rid}"])
                    if i == 300:
                        assert store.runs_for("mail:r0@x.test") == []
                        assert store.runs_for("mail:r301@x.test") == ["r301"]
                        assert {t.run_id for t in store.timers()} == (
                            {f"r{j}" for j in range(1, 300, 2)} | set(ids[300:]) - {"r300"})
                tx.set_correlations("r3", 3, [])
                tx.clear_timers("r1")
            assert sorted((t.run_id, t.kind, t.entry) for t in store.timers()) == sorted(
                (rid, "wake", 2) for i, rid in enumerate(ids) if i % 2 and rid != "r1")
            assert store.runs_for("mail:r5@x.test") == []
            assert store.runs_for("token:r6") == ["r6"] and store.runs_for("token:r3") == []
            assert sorted(r for rid in ids for r in store.runs_for(f"token:{rid}")) == sorted(
                rid for i, rid in enumerate(ids) if i % 3 == 0 and rid != "r3")

    def test_messages_are_marked_processed_all_or_none(self, tmp_path: Path) -> None:
        """mark_all_processed writes every mark, or none and False when one was there."""
        with self._opened(tmp_path) as store:
            with store.transaction() as tx:
                assert tx.mark_all_processed([("mail", "<m1>"), ("file", "f1")], "r1")
                assert not tx.mark_all_processed([("file", "f2"), ("mail", "<m1>")], "r2")
                assert tx.mark_all_processed([], "r3")
            assert store.is_processed("mail", "<m1>") and store.is_processed("file", "f1")
            assert not store.is_processed("file", "f2")
            with store.transaction() as tx:
                assert tx.mark_all_processed([("file", "f2"), ("file", "f2")], "r2")
            assert store.is_processed("file", "f2")
