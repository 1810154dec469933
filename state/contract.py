"""The store contract as tests: one suite that every back-end's test module subclasses.

A back-end's tests say ``class TestSQLiteStore(StoreContract)`` and provide the store
through :meth:`StoreContract.make_store`; every ``test_*`` method here then runs against it
(pytest collects them from the subclass; this class's name keeps it from being collected
itself). Each test checks one promise of ``state.base`` (atomic groups, group commit,
missing things) or of what the engine relies on beyond it (``run_ids``, ``timers_after``,
``delete_timer``, timer ids never reused, reads inside a transaction seeing its writes).
What takes several connections, processes or openings of one store (isolation,
durability, schema versions, locks) is in ``state.contract_shared``.

Shipped with the package, as ``structlog.testing`` is, so a back-end outside this repository
can run it too. It does not import pytest (a test extra) at module level.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NoReturn

from certwright.errors import RunNotFound, StoreError
from certwright.state.base import Store, Tx
from certwright.state.records import BACKOFF, RUNNING, WAITING, JournalEntry, RunRecord, Timer

AT = "2026-01-01T00:00:00.000000Z"
SECRET = "contract-secret-value"  # noqa: S105 - a fake secret the suite stores, then looks for


def skip(reason: str) -> NoReturn:
    """Skip the calling test (pytest is imported only here, when a test runs)."""
    import pytest
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pytest.skip raises


def raises(kind: type[BaseException], call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raised, which must be a ``kind``."""
    try:
        call()
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}")


def entry(run_id: str, n: int = 0, kind: str = "note") -> JournalEntry:
    """A journal entry whose data says which one it is."""
    return JournalEntry(run_id=run_id, kind=kind, data={"n": n}, at=AT)


def run(run_id: str, status: str = WAITING, **fields: Any) -> RunRecord:
    """A run record with every column set (``fields`` override, pipeline and state too)."""
    columns: dict[str, Any] = {"pipeline": "contract", "state": "asking", **fields}
    return RunRecord(id=run_id, spec_hash="c" * 64, status=status, created=AT, updated=AT,
                     **columns)


class Boom(Exception):
    """Raised inside a transaction to roll it back."""


def write_everything(tx: Tx, run_id: str) -> None:
    """One write of every kind, for run ``run_id``."""
    tx.append(entry(run_id))
    tx.put_run(run(run_id))
    tx.add_timer(run_id, 1, "timeout", AT)
    tx.set_correlations(run_id, 1, [f"mail:{run_id}@example.test"])
    tx.put_spec(f"spec-{run_id}", "contract", "<contract>", "pipeline: contract\n")
    tx.mark_processed("mail", f"<{run_id}@example.test>", run_id)
    tx.put_secrets(run_id, {"inputs": {"passphrase": SECRET}, "outputs": {}})


@contextmanager
def opened(make_store: Callable[[Path], Store], path: Path) -> Iterator[Store]:
    """``make_store(path)``, closed at the end of the block."""
    store = make_store(path)
    try:
        yield store
    finally:
        store.close()


class StoreContract:
    """The promises every store keeps; subclass it and implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        """Open (creating it if needed) the store named by ``path``, a file name in a fresh
        temporary folder; the same ``path`` again opens the same store."""
        raise NotImplementedError

    def opened(self, tmp_path: Path, name: str = "store") -> AbstractContextManager[Store]:
        """The store ``name`` in ``tmp_path``, closed at the end of the block."""
        return opened(self.make_store, tmp_path / name)

    # -- atomicity -----------------------------------------------------------------------
    def test_an_exception_rolls_back_every_write(self, tmp_path: Path) -> None:
        """An exception inside the block leaves nothing of its journal entries, runs,
        timers, correlations, specs, processed marks and secrets."""
        with self.opened(tmp_path) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    write_everything(tx, "r1")
                    raise Boom
            raises(Boom, fail)
            assert store.journal("r1") == [] and store.find_run("r1") is None
            assert store.timers() == [] and store.runs_for("mail:r1@example.test") == []
            assert store.load_secrets("r1") is None
            raises(StoreError, lambda: store.load_spec("spec-r1"))
            with store.transaction() as tx:
                assert tx.mark_processed("mail", "<r1@example.test>", "r1")

    def test_a_rolled_back_transaction_leaves_earlier_data_as_it_was(
            self, tmp_path: Path) -> None:
        """Appending, replacing and clearing inside a failed transaction change nothing."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                write_everything(tx, "r1")
            before = (store.journal("r1"), store.load_run("r1"), store.timers(),
                      store.runs_for("mail:r1@example.test"), store.load_secrets("r1"))

            def fail() -> None:
                with store.transaction() as tx:
                    tx.append(entry("r1", 1))
                    tx.put_run(run("r1", RUNNING, error="changed"))
                    store.journal("r1")  # buffered writes, if any, reach the database
                    tx.clear_timers("r1")
                    tx.set_correlations("r1", 2, [])
                    tx.put_secrets("r1", {})
                    raise Boom
            raises(Boom, fail)
            after = (store.journal("r1"), store.load_run("r1"), store.timers(),
                     store.runs_for("mail:r1@example.test"), store.load_secrets("r1"))
            assert after == before

    def test_an_interrupt_rolls_back_too(self, tmp_path: Path) -> None:
        """A KeyboardInterrupt (Ctrl-C) inside the block rolls it back and goes on up."""
        with self.opened(tmp_path) as store:
            def interrupted() -> None:
                with store.transaction() as tx:
                    write_everything(tx, "r1")
                    raise KeyboardInterrupt
            raises(KeyboardInterrupt, interrupted)
            assert store.find_run("r1") is None and store.journal("r1") == []

    def test_the_store_works_on_after_a_rollback(self, tmp_path: Path) -> None:
        """The next transaction after a failed one commits normally."""
        with self.opened(tmp_path) as store:
            def fail() -> None:
                with store.transaction() as tx:
                    tx.append(entry("r1"))
                    raise Boom
            raises(Boom, fail)
            with store.transaction() as tx:
                tx.append(entry("r1", 7))
            assert [e.data for e in store.journal("r1")] == [{"n": 7}]

    def test_reads_inside_a_transaction_see_its_writes(self, tmp_path: Path) -> None:
        """Runs, journal entries and runs by status are visible before the commit."""
        with self.opened(tmp_path) as store, store.transaction() as tx:
            seq = tx.append(entry("r1"))
            tx.put_run(run("r1", BACKOFF))
            assert [e.seq for e in store.journal("r1")] == [seq]
            assert store.load_run("r1").status == BACKOFF
            assert [r.id for r in store.list_runs([BACKOFF])] == ["r1"]
            assert store.run_ids([BACKOFF]) == [("r1", "c" * 64)]

    # -- the journal and group commit ----------------------------------------------------
    def test_append_returns_increasing_seqs_and_journal_reads_them_in_order(
            self, tmp_path: Path) -> None:
        """Each entry gets a larger seq than the one before, across transactions; the
        journal gives the run's entries in that order, each as it was written."""
        with self.opened(tmp_path) as store:
            seqs = []
            for n in range(3):
                with store.transaction() as tx:
                    seqs += [tx.append(entry("r1", 2 * n)), tx.append(entry("r1", 2 * n + 1))]
            assert seqs == sorted(seqs) and len(set(seqs)) == 6
            got = store.journal("r1")
            assert [e.seq for e in got] == seqs
            assert [e.data["n"] for e in got] == list(range(6))

    def test_entries_round_trip_exactly(self, tmp_path: Path) -> None:
        """run_id, kind, data (nested JSON) and at come back as written."""
        data = {"to": "probed", "final": None, "ok": True, "n": 3, "x": 1.5,
                "list": [1, "two", {"three": [None]}], "text": "ünïcode ✓"}
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                seq = tx.append(JournalEntry(run_id="r1", kind="entered", data=data, at=AT))
            assert store.journal("r1") == [JournalEntry("r1", "entered", data, AT, seq)]

    def test_one_transaction_commits_several_runs_in_order(self, tmp_path: Path) -> None:
        """Group commit: interleaved entries of several runs get increasing seqs, and each
        run's journal holds its own entries in the order they were appended."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                seqs = [(rid, n, tx.append(entry(rid, n))) for n in range(4)
                        for rid in ("r1", "r2", "r3")]
                for rid in ("r1", "r2", "r3"):
                    tx.put_run(run(rid))
            assert [s for _, _, s in seqs] == sorted(s for _, _, s in seqs)
            for rid in ("r1", "r2", "r3"):
                assert [(e.data["n"], e.seq) for e in store.journal(rid)] == [
                    (n, s) for r, n, s in seqs if r == rid]
            assert {r.id for r in store.list_runs()} == {"r1", "r2", "r3"}

    # -- runs and missing things ---------------------------------------------------------
    def test_a_run_round_trips_every_field(self, tmp_path: Path) -> None:
        """put_run then load_run gives an equal record, every field included."""
        full = run("r1", WAITING, entry=3, step_index=1, attempt=2, inflight="r1:3:1",
                   inputs={"domain": "example.test", "n": 2}, vars={"a": {"token": "<secret>"}},
                   memo={"initial": None}, waiting="mail to postmaster@example.test",
                   watch=["/srv/inbox"], deadline=AT, wake_at=AT, counters={"asking": 2},
                   error="it broke", alarms=["look at this"], seq=9)
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(full)
            assert store.load_run("r1") == full == store.find_run("r1")

    def test_put_run_replaces_the_row(self, tmp_path: Path) -> None:
        """A second put_run of the same id leaves one row, the newer."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING))
            with store.transaction() as tx:
                tx.put_run(run("r1", WAITING, seq=2))
            assert [(r.id, r.status, r.seq) for r in store.list_runs()] == [("r1", WAITING, 2)]

    def test_missing_things(self, tmp_path: Path) -> None:
        """load_run raises RunNotFound (a StoreError), find_run gives None, load_spec
        raises StoreError, load_secrets gives None; an unknown run's journal and an
        unknown key's runs are empty."""
        with self.opened(tmp_path) as store:
            assert isinstance(raises(RunNotFound, lambda: store.load_run("nope")), StoreError)
            assert store.find_run("nope") is None
            raises(StoreError, lambda: store.load_spec("f" * 64))
            assert store.load_secrets("nope") is None
            assert store.journal("nope") == [] and store.runs_for("mail:nobody") == []

    def test_runs_are_listed_by_status(self, tmp_path: Path) -> None:
        """list_runs gives all runs or those of the given statuses; run_ids gives the
        (id, spec_hash) of runs of the given statuses."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                for rid, status in (("r1", RUNNING), ("r2", WAITING), ("r3", BACKOFF)):
                    tx.put_run(run(rid, status))
            assert {r.id for r in store.list_runs()} == {"r1", "r2", "r3"}
            assert {r.id for r in store.list_runs([WAITING, BACKOFF])} == {"r2", "r3"}
            assert store.list_runs(["succeeded"]) == []
            assert store.run_ids([RUNNING]) == [("r1", "c" * 64)]
            assert set(store.run_ids([RUNNING, WAITING])) == {("r1", "c" * 64),
                                                              ("r2", "c" * 64)}

    def test_run_counts_group_runs_by_pipeline_state_and_status(self, tmp_path: Path) -> None:
        """run_counts gives how many runs each (pipeline, state, status) has, sorted."""
        with self.opened(tmp_path) as store:
            assert store.run_counts() == []
            with store.transaction() as tx:
                for rid, status in (("r1", WAITING), ("r2", WAITING), ("r3", BACKOFF)):
                    tx.put_run(run(rid, status))
                tx.put_run(run("r4", WAITING, pipeline="other", state="done"))
            assert store.run_counts() == [("contract", "asking", BACKOFF, 1),
                                          ("contract", "asking", WAITING, 2),
                                          ("other", "done", WAITING, 1)]

    def test_empty_filters_match_nothing(self, tmp_path: Path) -> None:
        """No statuses list no runs; clearing timers of no kinds clears none."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_run(run("r1", RUNNING))
                tx.add_timer("r1", 1, "wake", AT)
            with store.transaction() as tx:
                tx.clear_timers("r1", [])
            assert store.list_runs([]) == [] and store.run_ids([]) == []
            assert len(store.timers()) == 1

    # -- timers --------------------------------------------------------------------------
    def test_timers_come_back_as_added(self, tmp_path: Path) -> None:
        """add_timer returns the id; timers() gives (due, id, run_id, entry, kind)."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tid = tx.add_timer("r1", 2, "retry", "2026-01-02T00:00:00.000000Z")
            assert store.timers() == [Timer("2026-01-02T00:00:00.000000Z", tid, "r1", 2,
                                            "retry")]

    def test_timer_ids_grow_and_are_never_reused(self, tmp_path: Path) -> None:
        """Each new timer's id is above every earlier one's, deleted ones included, so
        timers_after(the largest id seen) finds exactly the timers added since."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                first, second = tx.add_timer("r1", 1, "wake", AT), tx.add_timer("r1", 1, "x", AT)
                tx.delete_timer(second)
            with store.transaction() as tx:
                third = tx.add_timer("r2", 1, "timeout", AT)
            assert first < second < third
            assert [t.id for t in store.timers_after(first)] == [third]
            assert store.timers_after(third) == []

    def test_waits_after_gives_the_runs_parked_since_a_mark(self, tmp_path: Path) -> None:
        """waits_after(seq) gives (seq, run) of the step_waiting entries above seq, in
        order, and nothing else: the daemon's scan for runs parked elsewhere relies on it."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.append(entry("r1", 1, "entered"))
                first = tx.append(entry("r1", 2, "step_waiting"))
            with store.transaction() as tx:
                second = tx.append(entry("r2", 1, "step_waiting"))
                tx.append(entry("r2", 2, "step_done"))
            assert store.waits_after(0) == [(first, "r1"), (second, "r2")]
            assert store.waits_after(first) == [(second, "r2")]
            assert store.waits_after(second) == []

    def test_timers_sort_by_due(self, tmp_path: Path) -> None:
        """Timers are records ordered by due (then id), whatever order they were added in."""
        dues = ["2026-03-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z",
                "2026-02-01T00:00:00.000000Z"]
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                for due in dues:
                    tx.add_timer("r1", 1, "wake", due)
            assert [t.due for t in sorted(store.timers())] == sorted(dues)

    def test_clearing_timers(self, tmp_path: Path) -> None:
        """clear_timers(kinds) drops the run's timers of those kinds, clear_timers() all of
        the run's, delete_timer one; other runs' timers stay."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                ids = {(rid, kind): tx.add_timer(rid, 1, kind, AT)
                       for rid in ("r1", "r2") for kind in ("timeout", "retry", "wake")}

            def left() -> set[tuple[str, str]]:
                return {(t.run_id, t.kind) for t in store.timers()}
            with store.transaction() as tx:
                tx.clear_timers("r1", ["wake", "retry"])
            assert left() == {("r1", "timeout"), ("r2", "timeout"), ("r2", "retry"),
                              ("r2", "wake")}
            with store.transaction() as tx:
                tx.clear_timers("r1")
                tx.delete_timer(ids["r2", "retry"])
            assert left() == {("r2", "timeout"), ("r2", "wake")}

    # -- correlations --------------------------------------------------------------------
    def test_correlations_are_replaced_and_cleared(self, tmp_path: Path) -> None:
        """set_correlations replaces the run's keys; an empty set clears them; a key may
        route to several runs."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.set_correlations("r1", 1, ["mail:a@x.test", "token:t1"])
                tx.set_correlations("r2", 1, ["mail:a@x.test"])
            assert sorted(store.runs_for("mail:a@x.test")) == ["r1", "r2"]
            with store.transaction() as tx:
                tx.set_correlations("r1", 2, ["file:/srv/req.csr"])
            assert store.runs_for("mail:a@x.test") == ["r2"] and store.runs_for("token:t1") == []
            assert store.runs_for("file:/srv/req.csr") == ["r1"]
            with store.transaction() as tx:
                tx.set_correlations("r1", 3, [])
            assert store.runs_for("file:/srv/req.csr") == []

    # -- secrets, specs, processed marks -------------------------------------------------
    def test_secrets_are_replaced_whole(self, tmp_path: Path) -> None:
        """load_secrets gives the mapping last put (nested values kept), never a merge."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                tx.put_secrets("r1", {"inputs": {"passphrase": SECRET}, "outputs": {}})
            with store.transaction() as tx:
                tx.put_secrets("r1", {"inputs": {}, "outputs": {"a": {"token": "t-1234"}}})
            assert store.load_secrets("r1") == {"inputs": {}, "outputs": {"a": {"token": "t-1234"}}}

    def test_secrets_stay_out_of_journal_and_runs(self, tmp_path: Path) -> None:
        """What put_secrets keeps shows in no journal entry and no run record."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                write_everything(tx, "r1")
            shown = json.dumps([e.data for e in store.journal("r1")], default=str)
            shown += json.dumps([vars(r) for r in store.list_runs()], default=str)
            assert SECRET not in shown and store.load_secrets("r1") is not None

    def test_put_spec_is_idempotent_and_pins_the_first_text(self, tmp_path: Path) -> None:
        """put_spec of a known hash succeeds and leaves the stored text alone."""
        with self.opened(tmp_path) as store:
            for text in ("pipeline: a\n", "pipeline: a\n", "pipeline: changed\n"):
                with store.transaction() as tx:
                    tx.put_spec("h1", "a", "a.yaml", text)
            assert store.load_spec("h1") == ("a", "a.yaml", "pipeline: a\n")

    def test_a_message_is_marked_processed_once(self, tmp_path: Path) -> None:
        """mark_processed is True the first time for (source, ident), then False."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                assert tx.mark_processed("mail", "<m1>", "r1")
                assert not tx.mark_processed("mail", "<m1>", "r2")
                assert tx.mark_processed("imap", "<m1>", None)
            with store.transaction() as tx:
                assert not tx.mark_processed("mail", "<m1>", None)
