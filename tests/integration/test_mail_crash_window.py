"""The crash window of the mail path: the daemon dies after ``wait.mail`` took a routed
mail (its processed-log mark made, the file moved to ``cur/``) and before the engine's
commit of that step's result. After a restart the run must make exactly one transition on
that mail: the mail neither lost (the run waiting for ever) nor taken twice.

The crash is the process ending inside the commit: a store whose transaction raises a
``BaseException`` (as a SIGKILL would, nothing of the engine's handles it) at the end of
the block that carries the ``wait.mail`` step's ``step_done``, so SQLite rolls it back.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from certwright.clock import FakeClock
from certwright.engine.daemon.mailroute import MailRouter
from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.mail.books import books_dir
from certwright.mail.maildir import Maildir
from certwright.state.base import Tx
from certwright.state.records import JournalEntry
from certwright.state.sqlite import SQLiteStore
from tests.support.mail import CA_BASE, PROBE_PATH, probe_mail

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
    """Dies inside the commit that would record the mail's take (once)."""

    armed = True

    def transaction(self) -> AbstractContextManager[Tx]:  # type: ignore[override]
        @contextmanager
        def block() -> Iterator[Tx]:
            with super(CrashingStore, self).transaction() as tx:
                watching = _Watching(tx)
                yield watching  # a Tx by its methods, as the engine uses it
                if watching.took_mail and self.armed:
                    raise Crash
        return block()


def _engine(store: SQLiteStore, state: Path, clock: FakeClock) -> Engine:
    eng = Engine(store, state, clock=clock, options=EngineOptions(inline=True))
    eng.open()
    return eng


def test_a_crash_between_taking_the_mail_and_the_commit_makes_one_transition(
        tmp_path: Path) -> None:
    state, md = tmp_path / "state", Maildir(tmp_path / "Maildir",
                                            books=books_dir(tmp_path / "state",
                                                            tmp_path / "Maildir"))
    md.ensure()
    clock = FakeClock()
    spec = load_pipeline_text(PIPELINE, "mailwait.yaml")
    store = CrashingStore(state / "certwright.sqlite")
    eng = _engine(store, state, clock)
    rid = eng.start_run(spec, {"maildir": str(md.path)})
    eng.run_until_idle()
    assert store.load_run(rid).status == "waiting"

    (md.new / "1.probe.host").write_bytes(probe_mail(to=TO))
    router = MailRouter(store.runs_for, eng.submit)
    assert router.route(md, "1.probe.host") == "routed"
    crashed = False
    try:
        eng.run_until_idle()
    except Crash:
        crashed = True
    assert crashed, "the commit carrying the take was reached"
    eng.close()
    store.close()
    assert list(md.cur.iterdir()), "the step had taken the mail before the crash"

    # the restart: a new store and engine on the same files; the mail is in cur/, so no
    # router sees it again; the run's poll (30 s) calls its step, which finds its take
    store = CrashingStore(state / "certwright.sqlite")
    store.armed = False
    eng = _engine(store, state, clock)
    assert store.load_run(rid).status == "waiting", "the crash lost the take's commit"
    MailRouter(store.runs_for, eng.submit).route(md, "1.probe.host")
    clock.advance(31)
    eng.run_until_idle()
    assert store.load_run(rid).status == "succeeded"
    eng.close()
    store.close()

    db = sqlite3.connect(state / "certwright.sqlite")
    try:
        kinds = [k for (k,) in db.execute("SELECT kind FROM journal WHERE run_id=? AND kind"
                                          " IN ('step_done', 'entered') ORDER BY seq", (rid,))]
    finally:
        db.close()
    assert kinds == ["entered", "step_done", "entered"]  # one take, one transition
    assert [p.name for p in md.cur.iterdir()] == ["1.probe.host:2,S"]
    assert not list(md.new.iterdir())
    assert not (md.books / ".quarantine" / "new").exists() or not list(
        (md.books / ".quarantine" / "new").iterdir())
