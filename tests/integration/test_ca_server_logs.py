"""A CA served in this process (the embedded CA of `run`, the tests) leaves the log's
routing alone: uvicorn's own loggers reach certwright's router like every library's,
instead of a handler of uvicorn's writing to stderr behind the display's back."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from certwright.clock import FakeClock
from certwright.logs import configure
from tests.support.ca import TEST_SETTINGS, CAServer


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_uvicorn_logs_reach_the_router_after_a_ca_server_started(tmp_path: Path) -> None:
    err = _Pipe()
    router = configure(json_lines=True, level="warning", stream=err)
    with CAServer(tmp_path / "ca", clock=FakeClock(), settings=TEST_SETTINGS):
        logging.getLogger("uvicorn.error").warning("library said %s", "this")
    router.to_stream(None)
    events = [json.loads(line)["event"] for line in err.getvalue().splitlines()]
    assert "library said this" in events
    assert not logging.getLogger("uvicorn").handlers  # none of uvicorn's own
