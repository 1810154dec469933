"""The embedded mail server's extra domains under the daemon follow the store: a domain
is taken while an unfinished run names it, refused once that run is over (from the next
read on), and the store is re-read only for a domain not known yet."""
from __future__ import annotations

from pathlib import Path

from certwright.engine.daemon.domains import StoreDomains
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline_text
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.state.location import open_store

PIPELINE = """
pipeline: named
version: 1
inputs:
  domain: {type: hostname, required: true}
  email: {type: email, default: "admin@mail.${domain}"}
initial: waiting
states:
  waiting:
    run:
      - step: wait.until
        with: {at: "2099-01-01T00:00:00Z"}
    next: done
  done: {final: true}
"""


def test_domains_of_unfinished_runs_are_taken_and_of_finished_ones_refused(tmp_path: Path):
    spec = load_pipeline_text(PIPELINE, "named.yaml")
    domains = StoreDomains(tmp_path, interval=0)
    store = open_store(tmp_path)
    engine = Engine(store, tmp_path, options=EngineOptions(inline=True))
    try:
        engine.open()
        assert not domains.accepts("late.test")
        engine.start_run(spec, coerce_inputs(spec, {"domain": "late.test"}), "r1")
        while engine.pump():
            pass
        assert domains.accepts("LATE.test.")
        assert domains.accepts("mail.late.test")  # the domain of its email
        reads = domains.reads
        assert domains.accepts("late.test")
        assert domains.reads == reads  # known: the store is not read again
        engine.cancel("r1")
        while engine.pump():
            pass
        assert domains.accepts("late.test")  # still known: nothing asked for a re-read
        assert not domains.accepts("other.test")  # an unknown domain re-reads ...
        assert domains.reads == reads + 1
        assert not domains.accepts("late.test")  # ... and the finished run is gone
    finally:
        engine.close()
        store.close()


def test_a_second_unknown_domain_waits_for_the_next_read_rather_than_a_refusal(
        tmp_path: Path):
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
    domains = StoreDomains(tmp_path, interval=0.25, monotonic=lambda: clock[0], sleep=sleep)
    open_store(tmp_path).close()
    assert not domains.accepts("a.test")
    assert not domains.accepts("b.test")
    assert slept == [0.25] and domains.reads == 2
