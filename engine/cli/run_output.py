"""Where the output of ``run`` and ``resume`` goes: :class:`RunOutput`.

=====================  ======================================  ===========================
options                stderr                                  the run's log file
=====================  ======================================  ===========================
(none), a terminal     live progress (a line per state, one    every event (debug and up),
                       live line, the result)                  ``runs/RUN/certwright.log``
(none), not one, or    the same as plain lines, no redraw
NO_COLOR / TERM=dumb
``-v``, ``--log-level``  progress, the log (at that level) and  the same
                       every step's own output
``-q``                 only the result or the error            the same
``--log-json``         only the log, as JSON lines             the same
=====================  ======================================  ===========================

The report a run produces goes to stdout in every mode. Events logged before the run's
folder exists (the services a run needs start first) are held in memory and written to
the file when it is attached. The file's path is printed when the run fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Self, TextIO

import structlog

from certwright.clock import clock_from_env
from certwright.engine.cli.progress import Progress, Screen, open_screen
from certwright.engine.run.foreground import Outcome, describe_wait
from certwright.engine.run.interceptor import Interceptor
from certwright.engine.run.naming import run_dir_for
from certwright.logs import LogRouter
from certwright.state.records import SUCCEEDED

__all__ = ["LOG_FILE", "RunOutput"]

LOG_FILE = "certwright.log"
EXIT_OK, EXIT_FAILED, EXIT_PARKED = 0, 1, 3

log = structlog.get_logger("certwright.cli")


class RunOutput:
    """The screen, the log's routing and the progress interceptor of one run's drive.

    Build it before anything that logs starts (the run's services); :meth:`close` it on
    every way out (it erases the live line), before an error is printed."""

    def __init__(self, args: argparse.Namespace, run_id: str,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.run_id = run_id
        self.quiet = bool(getattr(args, "quiet", False))
        self.json = bool(getattr(args, "log_json", False))
        verbose = bool(getattr(args, "verbose", False))
        shown = verbose or bool(getattr(args, "log_level_given", False))
        self.screen: Screen = open_screen(self.stream, quiet=self.quiet, silent=self.json)
        self.router: LogRouter | None = getattr(args, "log_router", None)
        self._untap = None
        if self.router is not None:
            level = str(getattr(args, "log_level", "info"))
            if self.json:
                pass  # configured so: JSON lines on stderr
            elif shown:
                self.router.to_stream(self.stream, level=level,
                                      colors=getattr(self.screen, "live", False),
                                      write=self.screen.log)
            else:
                self.router.to_stream(None)
            self.router.hold_for_file()
        self.progress = Progress(run_id, self.screen, verbose=verbose)
        if self.router is not None:
            self._untap = self.router.tap(self.progress.log_event)

    @property
    def hooks(self) -> list[Interceptor]:
        return [self.progress]

    def attach(self, state_dir: Path) -> Path | None:
        """Write the log to the run's folder, made again (0700) when it is gone: a run
        moved from another host, or whose folder was cleaned up, is resumed here."""
        if self.router is None:
            return None
        try:
            folder = run_dir_for(state_dir, self.run_id)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            return self.router.to_file(folder / LOG_FILE)
        except OSError as exc:
            log.warning("log_file_unavailable", error=f"{type(exc).__name__}: {exc}")
            return None

    def line(self, text: str) -> None:
        self.screen.line(text)

    def finish(self, outcome: Outcome) -> int:
        """Print the result (the report to stdout) and return the exit code."""
        self.progress.close()
        self.screen.close()
        run = outcome.run
        path = self.router.file_path if self.router is not None else None
        if outcome.parked:
            self._say(f"parked: run {run.id} is "
                      f"{describe_wait(run, clock_from_env().now()) or run.status}"
                      + (f"\nresume it on host {run.wants_host} (a daemon there takes it), "
                         f"or move it: certwright move {run.id} --host HOST"
                         if run.wants_host else f"\nresume with: certwright resume {run.id}"),
                      result=True)
            log.info("run_parked", run_id=run.id, state=run.state, waiting=run.waiting)
            return EXIT_PARKED
        if run.status == SUCCEEDED:
            reports = [str(outputs["report"]).rstrip() for outputs in run.vars.values()
                       if isinstance(outputs, dict) and outputs.get("report")]
            self._say(f"run {run.id} succeeded: state {run.state!r} "
                      f"({self.progress.elapsed()})", result=not reports)
            for report in reports:
                print(report, flush=True)
            return EXIT_OK
        for line in self.progress.failure_lines():
            self._say(line, result=False)
        where = f"\nlog: {path}" if path else ""
        error = run.error
        if self.progress.shown_error == run.error and not self.quiet:
            error = "the step's error is above"
        self._say(f"run {run.id} {run.status} in state {run.state!r}: {error}\n"
                  f"see: certwright history {run.id}{where}", result=True)
        return EXIT_FAILED

    def _say(self, text: str, *, result: bool) -> None:
        """A closing line: shown unless --log-json owns the stream; with -q only the
        result itself."""
        if self.json or (self.quiet and not result):
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.progress.close()
        self.screen.close()
        if self._untap is not None:
            self._untap()
            self._untap = None
        if self.router is not None:
            self.router.close_file()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
