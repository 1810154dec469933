"""The log's routing: stderr, a run's file (events held until it is attached), taps; and
the secret masking on every sink."""
from __future__ import annotations

import io
import json
import logging
import os
import stat

import structlog

from certwright.logs import SECRET_VALUES, configure


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_events_before_the_file_is_attached_are_written_to_it_first(tmp_path):
    err = _Tty()
    router = configure(stream=err)
    router.to_stream(None)
    router.hold_for_file()
    log = structlog.get_logger("t")
    log.info("service_started", port=1)
    log.debug("detail", n=2)
    path = router.to_file(tmp_path / "run.log")
    log.info("transitioned", to="b")
    router.close_file()
    text = path.read_text()
    assert text.index("service_started") < text.index("detail") < text.index("transitioned")
    assert err.getvalue() == ""  # the stream is off
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_stream_takes_its_level_and_json_while_the_file_takes_everything(tmp_path):
    err = _Tty()
    router = configure(json_lines=True, level="warning", stream=err)
    router.to_file(tmp_path / "run.log")
    log = structlog.get_logger("t")
    log.info("quiet_fact")
    log.warning("loud_fact", password="hunter2")
    token = SECRET_VALUES.set(("s3cret-value",))
    try:
        log.warning("command_output", stdout="it printed s3cret-value")
    finally:
        SECRET_VALUES.reset(token)
    logging.getLogger("uvicorn.error").warning("library said %s", "this")
    router.close_file()
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["loud_fact", "command_output", "library said this"]
    assert lines[0]["password"] == "<secret>"
    text = (tmp_path / "run.log").read_text()
    assert "quiet_fact" in text and "hunter2" not in text and "s3cret-value" not in text


def test_a_tap_sees_every_event_and_a_closed_stream_stops_nothing(tmp_path):
    err = _Tty()
    router = configure(stream=err)
    seen: list[dict[str, object]] = []
    remove = router.tap(seen.append)
    err.close()  # writing to it now raises ValueError: the router must swallow it
    structlog.get_logger("t").debug("command_output", step="greet", stdout="hi\n")
    remove()
    structlog.get_logger("t").info("after")
    assert [e["event"] for e in seen] == ["command_output"]
    assert seen[0]["stdout"] == "hi\n"


def test_a_level_no_sink_takes_is_dropped_until_one_takes_it_even_for_cached_loggers():
    """With only warnings shown, info and debug events go nowhere (and no processor sees
    them); a tap added later, or a file at debug, takes them again, also through a logger
    bound (and cached) before; captured logs (structlog.testing) see them all along."""
    err = _Tty()
    router = configure(level="warning", stream=err, cache=True)
    log = structlog.get_logger("t").bind(run_id="r1")
    log.info("hidden")
    seen: list[dict[str, object]] = []
    remove = router.tap(seen.append)
    log.info("tapped")
    log.debug("tapped_too")
    remove()
    log.info("hidden_again")
    with structlog.testing.capture_logs() as captured:
        structlog.get_logger("t").info("captured", n=1)
    log.warning("shown")
    assert [e["event"] for e in seen] == ["tapped", "tapped_too"]
    assert seen[0]["run_id"] == "r1" and seen[0]["level"] == "info"
    assert [e["event"] for e in captured] == ["captured"]
    assert "shown" in err.getvalue() and "hidden" not in err.getvalue()
    configure(stream=_Tty())  # as the other tests expect: not cached


def test_json_lines_write_what_the_json_module_cannot_as_structlog_would():
    """The JSON lines come from one encoder built once; values json cannot write are the
    object's ``__structlog__()`` or its repr, as structlog's own renderer gives them, and
    a key naming a secret is masked however often it is seen."""
    class Shown:
        def __structlog__(self) -> str:
            return "shown"

    class Plain:
        def __repr__(self) -> str:
            return "<plain>"

    err = _Tty()
    configure(json_lines=True, stream=err)
    log = structlog.get_logger("t")
    for _ in range(3):
        log.info("odd_values", a=Shown(), b=Plain(), when={"n": 1}, api_token="t0k")
    ours = err.getvalue().splitlines()
    theirs = structlog.processors.JSONRenderer()(
        None, "info", {"a": Shown(), "b": Plain(), "when": {"n": 1}})
    line = json.loads(ours[-1])
    assert {k: line[k] for k in ("a", "b", "when")} == json.loads(theirs)
    assert line["a"] == "shown" and line["b"] == "<plain>"
    assert all(json.loads(x)["api_token"] == "<secret>" for x in ours)
