"""The windows of the mail path, now that taking a mail is the engine's own commit.

``wait.mail`` returns Done with the message's marks; the engine writes them into the
store's ``processed`` table in the transaction that records the step's ``step_done``, and
moves the file to ``cur/`` after that commit. So a crash can fall:

* **before the commit** (inside it, rolled back): no mark, the mail still in ``new/``; after
  a restart the step takes it again, and the run makes exactly one transition on it;
* **after the commit, before the move**: the run has moved on and the mark is committed,
  the mail still in ``new/``; after a restart the router finishes the move from the
  store's mark, and nobody takes it again or quarantines it as a duplicate.

And two takers of one message (two engines on one store, as a ``run`` beside the daemon):
both steps return it, the first commit wins, and the other engine records nothing of its
step's result but calls the step again, which sees the message taken and waits on.

The crash is the process ending in the store's transaction: a ``BaseException`` (as a
SIGKILL would be, nothing of the engine's handles it) raised inside the block that carries
the ``wait.mail`` step's ``step_done`` (SQLite rolls it back) or right after its commit.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from certwright.clock import FakeClock
from certwright.engine.daemon.mailroute import MailRouter
from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.mail.books import books_dir
from certwright.mail.maildir import Maildir
from certwright.state.base import Tx
from certwright.state.postgres import PostgresStore
from certwright.state.records import JournalEntry
from certwright.state.sqlite import SQLiteStore
from tests.support.mail import CA_BASE, PROBE_PATH, probe_mail
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

TO = "postmaster@example.test"

PIPELINE = f"""
pipeline: mailwait
version: 1
inputs:
  maildir: {{type: string, required: true}}
initial: probed
states:
  probed:
    run:
      - step: wait.mail
        id: probe_mail
        with: {{maildir: "${{maildir}}", to: "{TO}", link_base: "{CA_BASE}",
               link_path: "{PROBE_PATH}"}}
    next: verified
  verified: {{final: success}}
"""


class Crash(BaseException):
    """The process ends here (nothing in the engine catches a BaseException)."""


class _Watching:
    """A Tx that notes when the ``wait.mail`` step's result is appended."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.took_mail = False

    def append(self, entry: JournalEntry) -> int:
        if entry.kind == "step_done" and entry.data.get("index") == 0:
            self.took_mail = True
        return self._tx.append(entry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class CrashingStore(SQLiteStore):
    """Dies in the transaction that records the mail's take (once): inside it (``before``
    its commit) or right ``after`` it."""

    armed = True
    when = "before"

    def transaction(self) -> AbstractContextManager[Tx]:  # type: ignore[override]
        @contextmanager
        def block() -> Iterator[Tx]:
            with super(CrashingStore, self).transaction() as tx:
                watching = _Watching(tx)
                yield watching  # a Tx by its methods, as the engine uses it
                if watching.took_mail and self.armed and self.when == "before":
                    raise Crash
            if watching.took_mail and self.armed and self.when == "after":
                raise Crash
        return block()


def _engine(store: SQLiteStore, state: Path, clock: FakeClock) -> Engine:
    eng = Engine(store, state, clock=clock, options=EngineOptions(inline=True))
    eng.open()
    return eng


def _setup(tmp_path: Path, when: str) -> tuple[Path, Maildir, FakeClock, CrashingStore,
                                              Engine, str]:
    """A run waiting for its probe mail, the mail delivered and routed, the store armed."""
    state = tmp_path / "state"
    md = Maildir(tmp_path / "Maildir", books=books_dir(state, tmp_path / "Maildir"))
    md.ensure()
    clock = FakeClock()
    store = CrashingStore(state / "certwright.sqlite")
    store.when = when
    eng = _engine(store, state, clock)
    rid = eng.start_run(load_pipeline_text(PIPELINE, "mailwait.yaml"), {"maildir": str(md.path)})
    eng.run_until_idle()
    assert store.load_run(rid).status == "waiting"
    (md.new / "1.probe.host").write_bytes(probe_mail(to=TO))
    assert MailRouter(store.runs_for, eng.submit,
                      processed=store.is_processed).route(md, "1.probe.host") == "routed"
    crashed = False
    try:
        eng.run_until_idle()
    except Crash:
        crashed = True
    assert crashed, "the transaction carrying the take was reached"
    eng.close()
    store.close()
    return state, md, clock, store, eng, rid


def _restart(state: Path, clock: FakeClock) -> tuple[CrashingStore, Engine]:
    store = CrashingStore(state / "certwright.sqlite")
    store.armed = False
    return store, _engine(store, state, clock)


def _takes_and_transitions(state: Path, rid: str) -> tuple[list[str], list[tuple[str, str]]]:
    db = sqlite3.connect(state / "certwright.sqlite")
    try:
        kinds = [k for (k,) in db.execute("SELECT kind FROM journal WHERE run_id=? AND kind"
                                          " IN ('step_done', 'entered') ORDER BY seq", (rid,))]
        marks = [(src.split(":")[0], run) for src, run in db.execute(
            "SELECT source, run_id FROM processed ORDER BY source")]
    finally:
        db.close()
    return kinds, marks


def _nothing_quarantined(md: Maildir) -> bool:
    aside = md.books / ".quarantine" / "new"
    return not aside.exists() or not list(aside.iterdir())


def test_a_crash_before_the_takes_commit_leaves_the_mail_in_new_and_one_transition(
        tmp_path: Path) -> None:
    """Dying inside the commit of ``step_done`` leaves no mark and the mail in new/ (the
    move comes after the commit); after the restart the router offers it again, the step
    takes it, and the run makes one transition on it."""
    state, md, clock, _, _, rid = _setup(tmp_path, "before")
    assert md.list_new() == ["1.probe.host"] and md.list_cur() == []
    assert _takes_and_transitions(state, rid)[1] == [], "a mark outlived the rollback"

    store, eng = _restart(state, clock)
    assert store.load_run(rid).status == "waiting", "the crash lost the rollback"
    MailRouter(store.runs_for, eng.submit,
               processed=store.is_processed).route(md, "1.probe.host")
    eng.run_until_idle()
    assert store.load_run(rid).status == "succeeded"
    eng.close()
    store.close()
    kinds, marks = _takes_and_transitions(state, rid)
    assert kinds == ["entered", "step_done", "entered"]  # one take, one transition
    assert marks == [("mail-file", rid), ("mail", rid)]
    assert md.list_cur() == ["1.probe.host:2,S"] and md.list_new() == []
    assert _nothing_quarantined(md)


def test_a_crash_after_the_takes_commit_is_finished_from_the_stores_mark(
        tmp_path: Path) -> None:
    """Dying right after the commit of ``step_done`` (and its marks), before the move:
    the run has moved on and the mail is still in new/. After the restart the router
    finds the store's mark for that very file and finishes the move; nobody takes it
    again and it is no duplicate of itself."""
    state, md, clock, _, _, rid = _setup(tmp_path, "after")
    assert md.list_new() == ["1.probe.host"], "the move ran although the process died"
    kinds, marks = _takes_and_transitions(state, rid)
    assert kinds == ["entered", "step_done", "entered"]
    assert marks == [("mail-file", rid), ("mail", rid)]

    store, eng = _restart(state, clock)
    assert store.load_run(rid).status == "succeeded"
    router = MailRouter(store.runs_for, eng.submit, processed=store.is_processed)
    with capture_logs() as logs:
        assert router.route(md, "1.probe.host") == "gone"
    eng.run_until_idle()
    eng.close()
    store.close()
    assert [e["event"] for e in logs] == ["mail_move_finished"]
    assert md.list_cur() == ["1.probe.host:2,S"] and md.list_new() == []
    assert _takes_and_transitions(state, rid)[0] == kinds  # nothing more happened
    assert _nothing_quarantined(md)


def test_two_engines_on_one_store_take_one_message_once(tmp_path: Path) -> None:
    """Two engines (two store connections, as two processes) each with a run waiting for
    the same address; both steps judge the one message and return it before either
    commits. The first commit takes it; the second engine records no ``step_done`` for
    its run (``step_result_refused``), calls the step again, which sees it taken, and its
    run waits on. The message is moved once."""
    state = tmp_path / "state"
    marks = _two_takers(tmp_path, [SQLiteStore(state / "certwright.sqlite") for _ in range(2)])
    assert _takes_and_transitions(state, marks[0])[1] == [("mail-file", marks[0]),
                                                          ("mail", marks[0])]


def test_two_engines_on_one_postgresql_store_take_one_message_once(
        tmp_path: Path, postgres: Cluster) -> None:
    """The same two takers on one PostgreSQL store (as two daemons would be)."""
    url = postgres.store_url(str(tmp_path))
    rids = _two_takers(tmp_path, [PostgresStore(url) for _ in range(2)])
    store = PostgresStore(url)
    try:
        got = store.query("test", "SELECT source, run_id FROM processed ORDER BY source")
    finally:
        store.close()
    assert [(src.split(":")[0], run) for src, run in got] == [("mail-file", rids[0]),
                                                               ("mail", rids[0])]


def _two_takers(tmp_path: Path, stores: list[Any]) -> list[str]:
    """Both engines' runs wait, both steps return the one message, then each engine
    commits in turn; returns the run ids (the first one's took it)."""
    state = tmp_path / "state"
    md = Maildir(tmp_path / "Maildir", books=books_dir(state, tmp_path / "Maildir"))
    md.ensure()
    spec = load_pipeline_text(PIPELINE, "mailwait.yaml")
    clock = FakeClock()
    engines = [Engine(s, state, clock=clock, options=EngineOptions(inline=True, scope=()))
               for s in stores]
    rids = []
    for eng in engines:
        eng.open()
        rids.append(eng.start_run(spec, {"maildir": str(md.path)}))
        eng.run_until_idle()
    (md.new / "1.probe.host").write_bytes(probe_mail(to=TO))
    with capture_logs() as logs:
        for eng, rid in zip(engines, rids, strict=True):
            eng.wake(rid)
            assert eng.pump()  # the re-check runs (inline): its Done waits in the inbox
        for eng in engines:
            eng.run_until_idle()  # first A's commit, then B's, refused, and B looks again
    first, second = (stores[0].load_run(r) for r in rids)
    assert first.status == "succeeded"
    assert second.status == "waiting" and second.state == "probed"
    refused = [e for e in logs if e["event"] == "step_result_refused"]
    assert [e["run_id"] for e in refused] == [rids[1]]
    assert [e["event"] for e in logs if e.get("run_id") == rids[1]].count("step_waiting") <= 1
    kinds = [e.kind for e in stores[0].journal(rids[1])]
    assert "step_done" not in kinds and kinds.count("entered") == 1
    for eng, s in zip(engines, stores, strict=True):
        eng.close()
        s.close()
    assert md.list_cur() == ["1.probe.host:2,S"] and md.list_new() == []
    assert _nothing_quarantined(md)
    return rids


def test_two_runs_of_one_engine_taking_one_message_in_one_commit(tmp_path: Path) -> None:
    """Two runs of one engine return the one message and their results land in the same
    pump (one transaction): the first's marks are written, the second's insert would find
    them in that very transaction, so its result is refused and its step looks again; the
    move happens once, after the commit."""
    state = tmp_path / "state"
    md = Maildir(tmp_path / "Maildir", books=books_dir(state, tmp_path / "Maildir"))
    md.ensure()
    store = SQLiteStore(state / "certwright.sqlite")
    eng = Engine(store, state, clock=FakeClock(), options=EngineOptions(inline=True))
    eng.open()
    spec = load_pipeline_text(PIPELINE, "mailwait.yaml")
    rids = [eng.start_run(spec, {"maildir": str(md.path)}) for _ in range(2)]
    eng.run_until_idle()
    (md.new / "1.probe.host").write_bytes(probe_mail(to=TO))
    with capture_logs() as logs:
        for rid in rids:
            eng.wake(rid)
        assert eng.pump()  # both re-checks run (inline) after this pump; both return Done
        eng.run_until_idle()
    states = sorted(store.load_run(r).status for r in rids)
    refused = [e["run_id"] for e in logs if e["event"] == "step_result_refused"]
    eng.close()
    store.close()
    assert states == ["succeeded", "waiting"]
    assert len(refused) == 1 and refused[0] in rids
    assert md.list_cur() == ["1.probe.host:2,S"] and md.list_new() == []
    assert _nothing_quarantined(md)
