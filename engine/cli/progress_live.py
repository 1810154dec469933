"""The live screen on a terminal, drawn with rich: the only module that imports it (rich
costs about 0.1 s to import, which ``--help`` and ``status`` must not pay).

The live line is one row: a spinner and the text, cut with an ellipsis at the terminal's
width, so rich always knows how many rows to redraw and a long message never scrolls. The
width is read again on every redraw (eight a second), so a resized terminal (SIGWINCH) is
followed at the next one. Lasting lines and log lines are printed above it; on
:meth:`LiveScreen.close` the live line is erased and leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

__all__ = ["LiveScreen"]

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REFRESH_PER_SECOND = 8


class _LiveLine:
    """The renderable rich redraws: one row, never wrapped."""

    def __init__(self) -> None:
        self.text: str | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = self.text
        if not text:
            yield Text("")
            return
        frame = FRAMES[int(time.monotonic() * 10) % len(FRAMES)]
        line = Text.assemble((frame, "cyan"), " ", text)
        line.no_wrap = True
        line.truncate(max(options.max_width, 1), overflow="ellipsis")
        yield line


class LiveScreen:
    """A screen (see :class:`certwright.engine.cli.progress.Screen`) that redraws its live
    line in place."""

    live = True

    def __init__(self, stream: TextIO) -> None:
        self.tick, self.cross = "✓", "✗"
        self._console = Console(file=stream, highlight=False, soft_wrap=True,
                                emoji=False, markup=False)
        self._line = _LiveLine()
        self._lock = threading.Lock()
        self._live: Live | None = Live(self._line, console=self._console, transient=True,
                                       auto_refresh=True,
                                       refresh_per_second=REFRESH_PER_SECOND,
                                       redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def _print(self, text: Text) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed terminal: the log has it
            self._console.print(text)

    def line(self, text: str) -> None:
        styled = Text(text)
        if text.startswith(self.tick):
            styled.stylize("green", 0, 1)
        elif text.startswith(self.cross):
            styled.stylize("bold red", 0, 1)
        elif text.lstrip().startswith("│"):
            styled.stylize("dim")
        self._print(styled)

    def status(self, text: str | None, *, wait: bool = False) -> None:
        self._line.text = text
        live = self._live
        if live is not None:
            with contextlib.suppress(OSError, ValueError):
                live.refresh()

    def log(self, text: str) -> None:
        self._print(Text.from_ansi(text.rstrip("\n")))

    def close(self) -> None:
        with self._lock:
            live, self._live = self._live, None
        self._line.text = None
        if live is not None:
            with contextlib.suppress(OSError, ValueError):
                live.stop()
