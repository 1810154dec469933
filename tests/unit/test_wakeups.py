"""How a daemon acts on the wake notices it hears (``engine.daemon.wakeups``): its own are
ignored, a recheck only when addressed to it, and ``run``/``timer`` notices (or listening
again after the connection failed) fold into flags the loop takes once, each waking the
loop. No server: the notices are handed in as the listener's thread would."""
from __future__ import annotations

from typing import Any

from certwright.engine.daemon.wakeups import Wakeups
from certwright.events import Event
from certwright.state.notify_pg import Notice

ME = "host-a:1:x"


class Recorder:
    """The engine's thread-safe ways in, recorded."""

    def __init__(self) -> None:
        self.submitted: list[Event] = []
        self.woken: list[str] = []

    def submit(self, event: Event, run_id: str | None = None) -> None:
        self.submitted.append(event)

    def wake(self, run_id: str) -> None:
        self.woken.append(run_id)


def _wakeups() -> tuple[Wakeups, Recorder]:
    engine = Recorder()
    found: Any = engine  # the engine's submit and wake are all Wakeups uses
    return Wakeups("postgresql://unused", "test", ME, lambda: found), engine


def test_its_own_notices_are_ignored() -> None:
    """A notice this daemon sent (its owner in the payload) changes nothing."""
    w, engine = _wakeups()
    w.listener._on_notice(Notice("run", ME))
    w.listener._on_notice(Notice("recheck", ME, "r1", ME))
    assert w.take() == (False, False)
    assert engine.submitted == [] and engine.woken == []


def test_a_recheck_wakes_the_run_only_when_addressed_to_this_daemon() -> None:
    """A recheck for this daemon wakes the run; one for another daemon is ignored."""
    w, engine = _wakeups()
    w.listener._on_notice(Notice("recheck", "host-b:2:y", "r1", ME))
    w.listener._on_notice(Notice("recheck", "host-b:2:y", "r2", "host-c:3:z"))
    assert engine.woken == ["r1"]
    assert w.take() == (False, False)


def test_run_and_timer_notices_fold_into_flags_taken_once() -> None:
    """Many notices set two flags, each waking the loop; take() returns and clears them."""
    w, engine = _wakeups()
    for _ in range(3):
        w.listener._on_notice(Notice("run", ""))
    w.listener._on_notice(Notice("timer", "host-b:2:y"))
    assert len(engine.submitted) == 4 and {e.kind for e in engine.submitted} == {"tick"}
    assert w.take() == (True, True)
    assert w.take() == (False, False)


def test_listening_again_catches_up_once() -> None:
    """When the listener (re)connects, the loop takes free runs and loads timers once."""
    w, engine = _wakeups()
    w.listener._on_listening()
    assert w.take() == (True, True) and len(engine.submitted) == 1
