"""A foreground run's lease on a PostgreSQL store (``run``, ``resume``).

Daemons on a shared store take running runs no live lease covers; a command that drives a
run itself (``run --no-wait``, ``resume --no-wait``, or any run on a store no daemon
serves yet) holds the run's lease like one of them, so that no daemon takes the run while
the command's step executes and runs it a second time. The state folder's run lock keeps
out only a daemon of the same folder on SQLite.

:func:`foreground_lease` takes the lease before the run is made or driven (a lease row
needs no run row), sets it as the store's write fence, renews it every third of the lease
from a thread of its own while the command runs, and releases it at the end, with a
notice that wakes the daemons when the run is still running (a Ctrl-C in a step), so one
of them takes it at once. A lease held by a daemon refuses the command (exit 4); one left
by a command of this machine that has ended (say, one that exited 5 when the server went
away) is waited out, at most one lease period, and then taken. A lease lost meanwhile (the
command stopped past its lease) is logged; the store then refuses the command's writes for
the run (fencing), and the run goes on where the daemon that took it drives it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import structlog

from certwright.errors import CertwrightError, RunLocked

log = structlog.get_logger("certwright.cli")


class DrivenElsewhere(RunLocked):
    """A daemon holds the run's lease, so this command may not drive it (exit 4)."""

    def __init__(self, run_id: str, owner: str | None) -> None:
        self.pid = None
        who = f"daemon {owner}" if owner else "another process"
        CertwrightError.__init__(self, f"run {run_id} is driven by {who} now (it holds the run's "
                                       f"lease); see `certwright status`, or try again "
                                       f"once it parks")


@contextlib.contextmanager
def foreground_lease(store: Any, run_id: str, host: str | None) -> Iterator[None]:
    """Hold ``run_id``'s lease on a PostgreSQL ``store`` while the block runs (see the
    module); nothing for a SQLite store. DrivenElsewhere when a daemon holds it now."""
    if not hasattr(store, "fence"):
        yield
        return
    from certwright.state.leases_pg import PgLeases, daemon_owner
    leases = PgLeases(store, daemon_owner(None))  # this machine's name: see _gone
    if leases.take(run_id) is None:
        owner = leases.holder(run_id)  # None: the lease ran out since; the take below has it
        if owner is not None and _gone(owner):  # a command of this machine that died holds it
            left = leases.expires_in(run_id) or 0.0
            log.warning("lease_waiting", run_id=run_id, owner=owner, seconds=round(left, 1),
                        reason="the process holding the run's lease has ended")
            time.sleep(left + 0.2)
        if leases.take(run_id) is None:
            raise DrivenElsewhere(run_id, leases.holder(run_id) or owner)
    store.fence = leases
    stop = threading.Event()
    keeper = threading.Thread(target=_keep, args=(leases, stop), daemon=True,
                              name="certwright-lease")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        store.fence = None
        try:
            leases.release()
        except Exception as exc:  # noqa: BLE001 - the lease then runs out by itself
            log.warning("lease_release_failed", run_id=run_id,
                        error=f"{type(exc).__name__}: {exc}")


def _gone(owner: str) -> bool:
    """Whether lease owner ``owner`` (``host:pid:nonce``) was a process of this machine
    that has ended. Only the wait for its lease's end is decided by this: a wrong answer
    costs that wait, never a second driver (the lease is taken only once it ran out)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's)
    return False


def _keep(leases: Any, stop: threading.Event) -> None:
    """Renew every third of the lease until ``stop``; a failure is tried again then."""
    while not stop.wait(leases.lease_s / 3):
        try:
            for rid in leases.renew():
                log.warning("lease_lost", run_id=rid, owner=leases.owner)
        except Exception as exc:  # noqa: BLE001 - the server may be back at the next try
            log.warning("lease_renew_failed", error=f"{type(exc).__name__}: {exc}")
