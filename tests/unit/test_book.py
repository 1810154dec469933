"""The engine's book of runs: which runs it holds (``RunBook.is_active``)."""
from __future__ import annotations

from certwright.engine.run.book import RunBook


def test_a_run_queued_twice_is_active_until_both_are_taken() -> None:
    """A run put in ``ready`` twice (say, a retry and a wake) stays active until its last
    entry leaves; the entries come out in the order they went in, retry flag and all."""
    book = RunBook()
    book.make_ready("r1")
    book.make_ready("r2", retry=True)
    book.make_ready("r1", retry=True)
    assert book.is_active("r1") and book.is_active("r2") and not book.is_active("r3")
    assert book.pop_ready() == ("r1", False)
    assert book.is_active("r1")
    assert book.pop_ready() == ("r2", True)
    assert not book.is_active("r2")
    assert book.pop_ready() == ("r1", True)
    assert not book.is_active("r1") and not book.ready and book.idle()
