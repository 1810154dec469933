"""Process checks the tests share."""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie waiting for a reaper that may
    never come in a container holds nothing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
