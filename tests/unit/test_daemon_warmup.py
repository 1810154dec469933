"""The daemon's start-up heap is frozen out of the collector's full passes (``warmup``)."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from certwright.engine.daemon.warmup import settle


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test process's heap given back to the collector afterwards."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def test_settle_collects_start_up_garbage_then_freezes_what_lives(thawed: None) -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    frozen = settle()
    assert gone() is None, "the garbage start-up left is collected first"
    assert frozen == gc.get_freeze_count() > 0
    assert kept not in gc.get_objects(), "what lived through start-up is out of the passes"


def test_what_the_daemon_makes_later_is_collected_as_before(thawed: None) -> None:
    settle()
    later = _Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None


def test_a_frozen_cycle_is_kept_until_exit(thawed: None) -> None:
    """The price written in the module: a cycle frozen at start-up is never collected."""
    old = _Node()
    kept = weakref.ref(old)
    settle()
    del old
    gc.collect()
    assert kept() is not None
