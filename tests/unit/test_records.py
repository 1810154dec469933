"""Records as the engine handles them: a run's shallow copy, and rows' JSON text."""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

from certwright.state._sqlite_tx import _dumps
from certwright.state.records import RunRecord


def test_a_run_copies_shallowly_as_copy_copy_would() -> None:
    """copy.copy of a run is an equal, separate record sharing its containers (apply
    replaces a container it changes, never mutates it), a subclass's copy of its type."""
    run = RunRecord(id="r1", pipeline="p", spec_hash="h", counters={"a": 1}, vars={"s": {}})
    twin = copy.copy(run)
    assert twin == run and twin is not run and twin.counters is run.counters
    twin.state = "b"
    assert run.state == ""

    class Tagged(RunRecord):
        pass
    assert type(copy.copy(Tagged(id="r2", pipeline="p", spec_hash="h"))) is Tagged


def test_rows_are_the_text_json_dumps_writes() -> None:
    """Bodies and entries are compact, key-sorted JSON; what JSON lacks is written as str."""
    value = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": datetime(2026, 1, 1, tzinfo=UTC)}}
    assert _dumps(value) == json.dumps(value, separators=(",", ":"), sort_keys=True,
                                       default=str)
    assert _dumps(value).startswith('{"a":{"y":"2026-01-01 00:00:00+00:00","z":"\\u00e9"}')
