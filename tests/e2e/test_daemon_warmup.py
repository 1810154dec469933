"""`certwright daemon` freezes its start-up heap once ready; a Daemon in another program's
process leaves that program's heap alone."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from certwright.engine.daemon.service import Daemon
from tests.fixtures.daemon.harness import env_for, spawn, wait_for


def test_the_daemon_command_freezes_its_start_up_heap(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = spawn(["--state-dir", str(state), "--log-json", "daemon"], env_for(state),
                   tmp_path / "daemon.log")
    try:
        wait_for(lambda: any(e.get("event") == "daemon_ready" for e in daemon.events()), 60,
                 "the daemon to be ready")
        ready = next(e for e in daemon.events() if e.get("event") == "daemon_ready")
        count = "import gc; gc.collect(); print(len(gc.get_objects()))"
        bare = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True,
                              check=True)
        # the bare interpreter's heap is a few thousand objects; the daemon's imports many more
        assert isinstance(ready["heap_frozen"], int), ready
        assert ready["heap_frozen"] > 5 * int(bare.stdout), (ready, bare.stdout)
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_a_daemon_made_in_process_does_not_freeze_its_host(tmp_path: Path) -> None:
    from certwright.engine.daemon.config import DaemonConfig
    daemon = Daemon(tmp_path / "state", DaemonConfig())
    assert daemon.settle_heap is False
    assert gc.get_freeze_count() == 0
