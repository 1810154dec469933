"""The engine's one timer heap: every durable deadline of the runs it serves, in memory.

The store holds the timers (``timeout``, ``retry``, ``wake``); the heap mirrors them so the
core loop knows how long it may block and which are due, without a thread or a
``threading.Timer`` per deadline. A timer is pushed when the engine adds it or finds it in
the store (``open``, ``sync``), and popped when due.

Hazard: the heap is not told when a timer is cleared in the store (a transition clears the
run's timers): a popped timer may be stale. The engine checks each against the run (its
entry, status and ``wake_at``) before acting, and deletes it from the store when it fires.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple

from certwright.clock import parse_instant
from certwright.state.base import Tx
from certwright.state.records import RunRecord, Timer

__all__ = ["Due", "TimerHeap"]

IDLE_WAIT = 3600.0  # seconds the loop may block when no timer is pending


class Due(NamedTuple):
    """A timer in the heap; ordered by instant, then id (the store's order of adding)."""

    at: float      # the instant, seconds since the epoch
    id: int
    run_id: str
    entry: int     # the state entry it belongs to (stale once the run moved on)
    kind: str      # timeout | retry | wake
    due: str       # the instant as stored (ISO), compared with the run's ``wake_at``


class TimerHeap:
    """A min-heap of :class:`Due` plus the highest timer id seen (for ``sync``)."""

    def __init__(self) -> None:
        self._heap: list[Due] = []
        self.max_id = 0

    def saw(self, timer_id: int) -> None:
        """Remember a timer id found in the store, pushed or not (``sync`` reads above)."""
        self.max_id = max(self.max_id, timer_id)

    def load(self, timers: Iterable[Timer], scope: set[str] | None) -> int:
        """Mirror timers found in the store (those of runs in ``scope``, None: all);
        returns how many were pushed."""
        n = 0
        for t in timers:
            self.saw(t.id)
            if scope is None or t.run_id in scope:
                self.push(t)
                n += 1
        return n

    def add(self, tx: Tx, run: RunRecord, kind: str, due: str) -> None:
        """Add a durable timer for the run's current entry in ``tx``, and mirror it."""
        tid = tx.add_timer(run.id, run.entry, kind, due)
        self.push(Timer(due=due, id=tid, run_id=run.id, entry=run.entry, kind=kind))

    def push(self, t: Timer) -> None:
        self.saw(t.id)
        heapq.heappush(self._heap, Due(parse_instant(t.due).timestamp(), t.id, t.run_id,
                                       t.entry, t.kind, t.due))

    def defer(self, d: Due, seconds: float) -> None:
        """Push ``d`` back, due ``seconds`` later (its stored instant is unchanged)."""
        heapq.heappush(self._heap, d._replace(at=d.at + seconds))

    def pop_due(self, now: float) -> list[Due]:
        """Remove and return every timer due at ``now`` (epoch seconds) or earlier."""
        heap = self._heap
        out = []
        while heap and heap[0].at <= now:
            out.append(heapq.heappop(heap))
        return out

    def until_next(self, now: float) -> float:
        """Seconds from ``now`` until the next timer is due (0 if one is due already)."""
        if not self._heap:
            return IDLE_WAIT
        return max(0.0, self._heap[0].at - now)

    def next_at(self) -> float | None:
        """The instant (epoch seconds) of the next timer, or None."""
        return self._heap[0].at if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
