"""``certwright daemon`` with a memory probe, for ``bench/daemon.py``.

    python bench/daemon_probe.py OUT.json [certwright arguments...]

Runs certwright's own ``main`` (so the daemon is the daemon users run) after installing a
handler for SIGUSR1 that collects garbage (``gc.collect()``), gives freed heap back to the
system (glibc ``malloc_trim(0)``) and writes the process's memory from
``/proc/self/smaps_rollup`` (``rss``, ``pss``, ``anonymous`` in bytes, and a ``seq`` that
counts the probes) to ``OUT.json`` atomically. Without the collection and the trim, the
RSS of a daemon is mostly what its start-up allocated and freed (imports, the scan of the
store), which is why an empty daemon could measure above a full one. SQLite's page cache
lives on the same heap (no mmap is configured), so it is inside these figures.

Hazard: the handler runs in the main thread between bytecodes, while the daemon's other
threads go on; a figure is one instant, so ``bench/daemon.py`` takes several and keeps the
lowest.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

FIELDS = {"Rss:": "rss", "Pss:": "pss", "Anonymous:": "anonymous"}


def memory() -> dict[str, int]:
    """This process's rss, pss and anonymous memory in bytes (smaps_rollup)."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in FIELDS:
            out[FIELDS[parts[0]]] = int(parts[1]) * 1024
    return out


def main() -> int:
    target = Path(sys.argv[1])
    seq = [0]

    def probe(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        # not glibc: no trim, and the figure is then the untrimmed one
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        seq[0] += 1
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps({**memory(), "seq": seq[0]}))
        os.replace(tmp, target)

    signal.signal(signal.SIGUSR1, probe)
    from certwright.engine.cli.main import main as certwright_main
    return certwright_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
