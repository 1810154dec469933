"""The daemon's engine hook for metrics: what it counts from the engine's committed events,
timed by an injected monotonic clock (no sleep)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from certwright.engine.daemon.metrics import EngineMetrics
from certwright.state.contract import run


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_step_is_timed_from_start_to_outcome() -> None:
    registry, ticks = CollectorRegistry(), Ticks()
    hook = EngineMetrics(registry, monotonic=ticks)
    r = run("r1", pipeline="p")
    hook.step_started(r, "sign", 1)
    ticks.now += 2.5
    hook.step_finished(r, "sign", "failed")
    labels = {"pipeline": "p", "step": "sign", "outcome": "failed"}
    assert _sample(registry, "certwright_step_duration_seconds_sum", **labels) == 2.5
    assert _sample(registry, "certwright_step_duration_seconds_bucket", le="5.0",
                   **labels) == 1
    assert _sample(registry, "certwright_step_duration_seconds_bucket", le="1.0",
                   **labels) == 0


def test_a_step_started_before_the_daemon_is_not_timed() -> None:
    """An outcome without a start seen here (a step resumed after a restart) is no sample."""
    registry = CollectorRegistry()
    hook = EngineMetrics(registry, monotonic=Ticks())
    hook.step_finished(run("r1", pipeline="p"), "sign", "done")
    assert _sample(registry, "certwright_step_duration_seconds_count", pipeline="p",
                   step="sign", outcome="done") is None


def test_transitions_and_finished_runs_are_counted() -> None:
    registry = CollectorRegistry()
    hook = EngineMetrics(registry, monotonic=Ticks())
    r = run("r1", pipeline="p", status="succeeded")
    hook.transitioned(r, None, "new", "start")
    hook.transitioned(r, "new", "done", "next")
    hook.transitioned(run("r2", pipeline="p"), "new", "done", "next")
    hook.step_started(r, "left-open", 1)
    hook.run_finished(r)
    assert _sample(registry, "certwright_transitions_total", pipeline="p", from_state="new",
                   to_state="done") == 2
    assert _sample(registry, "certwright_transitions_total", pipeline="p", from_state="",
                   to_state="new") == 1
    assert _sample(registry, "certwright_runs_finished_total", pipeline="p",
                   status="succeeded") == 1
    assert hook._started == {}  # a finished run's open step is forgotten


def test_a_store_that_cannot_be_read_is_a_metric_not_a_traceback(tmp_path) -> None:
    """A scrape of a store that fails answers certwright_store_readable 0 (and logs why)
    rather than an error page with a traceback in the daemon's output."""
    from certwright.clock import FakeClock
    from certwright.engine.daemon.metrics import daemon_registry
    from certwright.engine.testing import FailingIO
    from certwright.state.sqlite import SQLiteStore
    flag = tmp_path / "eio"  # while it exists, every read fails with EIO (engine.testing)
    store = SQLiteStore(tmp_path / "certwright.sqlite", connect=FailingIO(flag).connect)
    try:
        registry, _ = daemon_registry(store, FakeClock())
        assert registry.get_sample_value("certwright_store_readable") == 1
        flag.touch()
        assert registry.get_sample_value("certwright_store_readable") == 0
        assert registry.get_sample_value("certwright_waits", {"kind": "file"}) is None
        flag.unlink()
        assert registry.get_sample_value("certwright_store_readable") == 1
    finally:
        store.close()


def test_the_ca_store_that_cannot_be_read_is_a_metric(tmp_path) -> None:
    """A CA folder whose store is missing answers certwright_ca_store_readable 0."""
    from certwright.ca.metrics import ca_registry
    registry = ca_registry(tmp_path / "missing" / "ca.sqlite3")
    assert registry.get_sample_value("certwright_ca_store_readable") == 0
    assert registry.get_sample_value("certwright_ca_certificates_issued_total") is None
