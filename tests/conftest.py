"""Session-wide test plumbing.

A safety net for real processes: tests start daemons, CAs, mail servers, Pebble and Apache
and must stop them; if one is left behind (a test failed between start and stop), it is
named at the end of the session and killed, so that CI never hangs on an orphan holding
its output open.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmd.strip()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def pytest_configure(config: pytest.Config) -> None:
    """Tests run as root, so nothing of the machine's is touched: the certificates root
    (else /etc/certwright/live) and the cache (else /var/cache/certwright) are temporary
    folders for the whole session, and the
    system configuration file (else /etc/certwright/config.yaml) a path that does not
    exist; a test that cares sets its own.

    Started as a background job of a shell script (``nohup make test &``), the session
    inherits SIGINT ignored, and so would every process it starts: the tests that press
    Ctrl-C on a run, a CA or a display would wait for an exit that never comes. Ctrl-C is
    given back to this process, so its children start with the default again."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("CERTWRIGHT_SYSTEM_CONFIG",
                          f"/nonexistent/certwright-tests-{os.getpid()}/config.yaml")
    if not os.environ.get("CERTWRIGHT_CACHE_DIR"):  # else /var/cache/certwright as root
        import tempfile
        cache = tempfile.mkdtemp(prefix="certwright-cache-")
        os.environ["CERTWRIGHT_CACHE_DIR"] = cache
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    if not os.environ.get("CERTWRIGHT_LIVE_DIR"):
        import tempfile
        made = tempfile.mkdtemp(prefix="certwright-live-")
        os.environ["CERTWRIGHT_LIVE_DIR"] = made
        config.add_cleanup(lambda: shutil.rmtree(made, ignore_errors=True))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = [(pid, cmd) for pid, cmd in _children(os.getpid()) if cmd]
    if not leftovers:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for pid, cmd in leftovers:
        if reporter:
            reporter.write_line(f"warning: a test left process {pid} running: {cmd[:160]}",
                                yellow=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists()
                                              for p, _ in leftovers):
        for pid, _ in leftovers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    for pid, _ in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


