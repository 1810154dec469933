"""The store contract across connections, processes and time; and the run locks.

:class:`SharedStoreContract` is the half of the store contract that needs more than one
opening of a store: a second connection sees nothing of an open transaction and all of a
committed one, a long-lived reader sees later commits (the daemon's ``sync``), two writers
taking turns never reuse a seq, a process killed inside a transaction leaves none of it,
everything committed survives closing and reopening, other processes read and write the
same store, and the schema version is recorded, upgraded from an older one and refused
from a newer one. A back-end subclasses it beside
:class:`state.contract.StoreContract`, with the same ``make_store``.

:class:`LockContract` checks ``state.locks`` (one driver per run, one daemon per state
directory) across real processes. The locks are files beside any store, so it runs once,
not per back-end.

Hooks a back-end may leave out (their tests then skip): ``schema_version``,
``make_old_store``, ``make_newer_store``, ``store_code``. Hazard: the process tests start
Python interpreters (``sys.executable``), which must import this package.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from certwright.errors import RunLocked, StoreError
from certwright.state.base import Store
from certwright.state.contract import entry, opened, raises, skip, write_everything
from certwright.state.locks import daemon_lock, run_lock
from certwright.state.records import WAITING


class SharedStoreContract:
    """What several openings of one store promise; implement :meth:`make_store`."""

    def make_store(self, path: Path) -> Store:
        """Open (creating it if needed) the store named by ``path``, a file name in a fresh
        temporary folder; the same ``path`` again opens the same store."""
        raise NotImplementedError

    # -- optional hooks ------------------------------------------------------------------
    def schema_version(self, store: Store) -> int:
        """The schema version the store records (default: ``store.schema_version()``)."""
        version = getattr(store, "schema_version", None)
        if version is None:
            skip("this store records no schema version")
        return int(version())

    def make_old_store(self, path: Path) -> list[str]:
        """Write at ``path`` a store of an older schema this code still upgrades, holding
        some runs; return their ids."""
        skip("this store has no older schema to upgrade")

    def make_newer_store(self, path: Path) -> None:
        """Make the store at ``path`` look written by a newer version than this one."""
        skip("this store has no schema version to refuse")

    def store_code(self, path: Path) -> str:
        """Python source that binds ``store`` to the store at ``path``, run by another
        process."""
        skip("this store is not opened from another process")

    # -- plumbing ------------------------------------------------------------------------
    def opened(self, tmp_path: Path, name: str = "store") -> AbstractContextManager[Store]:
        """The store ``name`` in ``tmp_path``, closed at the end of the block."""
        return opened(self.make_store, tmp_path / name)

    def in_process(self, tmp_path: Path, code: str, *, returncode: int = 0) -> Any:
        """Run ``code`` with ``store`` open in another process, which must end with
        ``returncode`` (negative: killed by that signal); the JSON it printed, if any."""
        source = self.store_code(tmp_path / "store") + "\n" + code + "\nstore.close()\n"
        done = subprocess.run([sys.executable, "-c", source], capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != returncode:
            raise AssertionError(f"the other process ended with {done.returncode}, not "
                                 f"{returncode}:\n{done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    # -- other connections ---------------------------------------------------------------
    def test_another_connection_sees_nothing_before_the_commit(self, tmp_path: Path) -> None:
        """A second connection reads none of an open transaction's writes, then all."""
        with self.opened(tmp_path) as store, self.opened(tmp_path) as other:
            with store.transaction() as tx:
                write_everything(tx, "r1")
                assert store.find_run("r1") is not None  # writes reach the database
                assert other.find_run("r1") is None and other.journal("r1") == []
                assert other.timers() == [] and other.load_secrets("r1") is None
            assert other.load_run("r1") == store.load_run("r1")
            assert len(other.journal("r1")) == 1 and len(other.timers()) == 1

    def test_a_connection_open_before_a_commit_sees_it(self, tmp_path: Path) -> None:
        """A long-lived reader (the daemon) sees what another connection committed later:
        runs, journal, new timers (timers_after) and correlations."""
        with self.opened(tmp_path) as reader, self.opened(tmp_path) as writer:
            assert reader.timers_after(0) == []
            with writer.transaction() as tx:
                write_everything(tx, "r1")
            assert reader.load_run("r1") == writer.load_run("r1")
            assert reader.journal("r1") == writer.journal("r1")
            assert reader.timers_after(0) == writer.timers()
            assert reader.runs_for("mail:r1@example.test") == ["r1"]

    def test_another_process_reads_what_was_committed(self, tmp_path: Path) -> None:
        """A second process opening the store reads the committed run, journal, timers."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                write_everything(tx, "r1")
            seen = self.in_process(tmp_path, "import json\nprint(json.dumps(["
                                   "store.load_run('r1').status, "
                                   "[e.seq for e in store.journal('r1')], "
                                   "[t.id for t in store.timers()]]))")
            assert seen == [WAITING, [e.seq for e in store.journal("r1")],
                            [t.id for t in store.timers()]]

    def test_what_another_process_commits_is_seen_here(self, tmp_path: Path) -> None:
        """A store open here sees runs, entries and timers another process committed."""
        with self.opened(tmp_path) as store:
            self.in_process(tmp_path, textwrap.dedent("""\
                from certwright.state.contract import write_everything
                with store.transaction() as tx:
                    write_everything(tx, 'r9')
                print('{}')"""))
            assert store.load_run("r9").status == WAITING
            assert len(store.journal("r9")) == 1 and len(store.timers_after(0)) == 1

    def test_a_process_killed_inside_a_transaction_leaves_none_of_it(
            self, tmp_path: Path) -> None:
        """A process killed (SIGKILL) in the middle of a transaction, its writes already
        in the database, leaves nothing of that transaction and all of the one before."""
        self.in_process(tmp_path, textwrap.dedent("""\
            import os, signal
            from certwright.state.contract import entry, write_everything
            with store.transaction() as tx:
                write_everything(tx, 'r1')
            with store.transaction() as tx:
                write_everything(tx, 'r2')
                tx.append(entry('r1', 1))
                assert store.find_run('r2') is not None
                os.kill(os.getpid(), signal.SIGKILL)"""), returncode=-signal.SIGKILL)
        with self.opened(tmp_path) as store:
            assert [e.data for e in store.journal("r1")] == [{"n": 0}]
            assert store.find_run("r2") is None and store.load_secrets("r2") is None
            assert {t.run_id for t in store.timers()} == {"r1"}
            assert store.runs_for("mail:r2@example.test") == []

    def test_two_connections_taking_turns_never_reuse_a_seq(self, tmp_path: Path) -> None:
        """Seqs stay unique and increasing when two connections write one after another."""
        with self.opened(tmp_path) as a, self.opened(tmp_path) as b:
            seqs = []
            for turn in range(4):
                with (a, b)[turn % 2].transaction() as tx:
                    seqs += [tx.append(entry("r1", turn)), tx.append(entry("r1", turn))]
            assert seqs == sorted(set(seqs))
            assert [e.seq for e in a.journal("r1")] == seqs

    # -- reopening and schema versions ---------------------------------------------------
    def test_everything_committed_survives_a_reopen(self, tmp_path: Path) -> None:
        """Close and open again: runs, journal, timers, correlations, specs, processed
        marks and secrets are all there."""
        with self.opened(tmp_path) as store:
            with store.transaction() as tx:
                write_everything(tx, "r1")
            kept = (store.load_run("r1"), store.journal("r1"), store.timers(),
                    store.load_secrets("r1"), store.load_spec("spec-r1"))
        with self.opened(tmp_path) as store:
            assert (store.load_run("r1"), store.journal("r1"), store.timers(),
                    store.load_secrets("r1"), store.load_spec("spec-r1")) == kept
            assert store.runs_for("mail:r1@example.test") == ["r1"]
            with store.transaction() as tx:
                assert not tx.mark_processed("mail", "<r1@example.test>", None)

    def test_the_schema_version_is_recorded_and_reopening_keeps_it(
            self, tmp_path: Path) -> None:
        """A new store records a version; opening it again changes neither it nor data."""
        with self.opened(tmp_path) as store:
            version = self.schema_version(store)
            with store.transaction() as tx:
                write_everything(tx, "r1")
            kept = (store.load_run("r1"), store.journal("r1"), store.timers())
        for _ in range(2):
            with self.opened(tmp_path) as store:
                assert self.schema_version(store) == version > 0
                assert (store.load_run("r1"), store.journal("r1"), store.timers()) == kept

    def test_a_store_of_an_older_schema_is_upgraded_on_open(self, tmp_path: Path) -> None:
        """An older store opens at today's version, keeps its runs and takes every write."""
        with self.opened(tmp_path, "fresh") as fresh:
            today = self.schema_version(fresh)
        ids = self.make_old_store(tmp_path / "store")
        with self.opened(tmp_path) as store:
            assert self.schema_version(store) == today
            assert [store.load_run(rid).id for rid in ids] == ids
            with store.transaction() as tx:
                write_everything(tx, "new")
            assert store.load_secrets("new") is not None and len(store.journal("new")) == 1

    def test_a_store_of_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A store written by a newer version is refused (StoreError), not downgraded."""
        with self.opened(tmp_path):
            pass
        self.make_newer_store(tmp_path / "store")
        raises(StoreError, lambda: self.make_store(tmp_path / "store"))


class LockContract:
    """``state.locks`` between processes: refusals name the holder, deaths free locks."""

    def test_a_held_run_lock_refuses_another_process_naming_the_holder(
            self, tmp_path: Path) -> None:
        """While this process holds a run's lock, another one is refused with our pid;
        once released, the other process takes it."""
        with run_lock(tmp_path, "r1"):
            assert _try_lock(tmp_path, "r1") == f"locked {os.getpid()}"
        assert _try_lock(tmp_path, "r1") == "acquired"

    def test_run_locks_are_per_run(self, tmp_path: Path) -> None:
        """Holding one run's lock does not keep another run's from being taken."""
        with run_lock(tmp_path, "r1"):
            assert _try_lock(tmp_path, "r2") == "acquired"

    def test_a_killed_holder_leaves_no_stale_lock(self, tmp_path: Path) -> None:
        """A holder killed by SIGKILL frees the lock: the next process takes it at once."""
        with _holding(tmp_path, "run_lock", "r1") as holder:
            raises(RunLocked, run_lock(tmp_path, "r1").acquire)
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
            run_lock(tmp_path, "r1").acquire().release()

    def test_the_daemon_lock_names_its_holder(self, tmp_path: Path) -> None:
        """holder() gives the serving process's pid and a refusal names it; None when
        nobody serves."""
        lock = daemon_lock(tmp_path)
        assert lock.holder() is None
        with _holding(tmp_path, "daemon_lock") as holder:
            assert lock.holder() == holder.pid
            refused = raises(RunLocked, lock.acquire)
            assert isinstance(refused, RunLocked) and refused.pid == holder.pid
            assert f"pid {holder.pid}" in str(refused)
        assert lock.holder() is None


_LOCK_CODE = """
import sys
from pathlib import Path
from certwright.errors import RunLocked
from certwright.state import locks
lock = getattr(locks, sys.argv[1])(Path(sys.argv[2]), *sys.argv[4:])
if sys.argv[3] == "try":
    try:
        lock.acquire().release()
        print("acquired")
    except RunLocked as exc:
        print(f"locked {exc.pid}")
else:
    lock.acquire()
    print("held", flush=True)
    sys.stdin.read()
    lock.release()
"""


def _try_lock(state_dir: Path, run_id: str) -> str:
    """Another process tries the run lock: "acquired" or "locked <holder pid>"."""
    done = subprocess.run([sys.executable, "-c", _LOCK_CODE, "run_lock", str(state_dir),
                           "try", run_id], capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip()


@contextmanager
def _holding(state_dir: Path, which: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding a lock (``run_lock``, ``daemon_lock``) for the block; it
    lets go and ends at the end of the block (if it is still alive)."""
    proc = subprocess.Popen([sys.executable, "-c", _LOCK_CODE, which, str(state_dir),
                             "hold", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        if line.strip() != "held":
            raise AssertionError(f"the lock holder did not start: {line!r}")
        yield proc
    finally:
        if proc.poll() is None and proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
