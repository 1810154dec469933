"""Several processes opening the same new store at once (a `run` and a `status` started
together, a daemon and a CLI): every one gets a migrated store, none fails."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

OPENER = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
from certwright.state.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
print(store.schema_version())
"""


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path):
    root = Path(__file__).resolve().parents[2]
    for attempt in range(12):  # each round is a fresh race on a new file
        db, go = tmp_path / f"s{attempt}" / "certwright.sqlite", tmp_path / f"go{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(db), str(go)], cwd=root,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        time.sleep(0.5)  # let every process reach the start line
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
        for p, (_out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
        versions = {out.strip() for out, _ in results}
        assert len(versions) == 1 and versions != {"0"}


def test_a_store_of_an_older_schema_is_migrated_in_place(tmp_path: Path):
    """A version-1 store (before the secrets table) keeps its runs and gains the table."""
    import sqlite3

    from certwright.state import names as N
    from certwright.state.sqlite import SQLiteStore

    db = tmp_path / "certwright.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(N.MIGRATIONS[0] + f";INSERT INTO {N.T_META}(key, value) "
                       f"VALUES('schema_version', '1');"
                       f"INSERT INTO {N.T_RUNS} VALUES('r1', 'p', 'h', 'a', 'waiting', '{{}}', "
                       f"'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');")
    conn.close()
    store = SQLiteStore(db)
    assert store.schema_version() == len(N.MIGRATIONS) >= 2
    assert store.find_run("r1").status == "waiting"
    with store.transaction() as tx:
        tx.put_secrets("r1", {"inputs": {"k": "v"}, "outputs": {}})
    assert store.load_secrets("r1") == {"inputs": {"k": "v"}, "outputs": {}}


def test_background_checkpoints_copy_the_wal_into_the_database(tmp_path: Path, monkeypatch):
    """With background_checkpoint the WAL reaches the database file without any commit
    checkpointing (the backstop is far away): the thread did it."""
    from certwright.state import sqlite
    from certwright.state.records import JournalEntry

    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 0.05)
    monkeypatch.setattr(sqlite, "CHECKPOINT_BACKSTOP_PAGES", 1_000_000)
    db = tmp_path / "certwright.sqlite"
    store = sqlite.SQLiteStore(db, background_checkpoint=True)
    try:
        empty = db.stat().st_size
        with store.transaction() as tx:
            for i in range(300):
                tx.append(JournalEntry(run_id=f"r{i}", kind="created", data={"pad": "x" * 2000},
                                       at="2026-01-01T00:00:00Z"))
        deadline = time.monotonic() + 10
        while db.stat().st_size <= empty + 300 * 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.stat().st_size > empty + 300 * 2000
    finally:
        store.close()
    assert store._checkpointer is not None and not store._checkpointer.is_alive()


def test_journal_sequence_numbers_stay_unique_across_connections(tmp_path: Path):
    """Entries are written in batches with numbers the transaction assigns; two
    connections (two processes' stores) taking turns never reuse a number, and a read
    inside a transaction sees what it buffered."""
    from certwright.state.records import JournalEntry
    from certwright.state.sqlite import SQLiteStore

    db = tmp_path / "certwright.sqlite"
    a, b = SQLiteStore(db), SQLiteStore(db)
    seqs = []
    for turn in range(6):
        store = (a, b)[turn % 2]
        with store.transaction() as tx:
            seqs.extend(tx.append(JournalEntry(run_id=f"r{turn % 2}", kind="note",
                                               data={"i": i}, at="2026-01-01T00:00:00Z"))
                        for i in range(3))
            assert [e.seq for e in store.journal(f"r{turn % 2}")][-3:] == seqs[-3:]
    assert seqs == list(range(1, 19))
    r0, r1 = [e.seq for e in a.journal("r0")], [e.seq for e in b.journal("r1")]
    assert r0 == [1, 2, 3, 7, 8, 9, 13, 14, 15] and r1 == [4, 5, 6, 10, 11, 12, 16, 17, 18]
    a.close()
    b.close()
