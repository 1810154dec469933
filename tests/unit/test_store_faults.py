"""How the store tells its failures apart, and what it says about each (no root needed:
real SQLite errors on real files; the mounted faults are in tests/e2e/test_store_faults.py).
"""
from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from certwright.engine.testing import FailingIO
from certwright.state.faults import StoreFault, kind_of, store_fault
from certwright.state.sqlite import SQLiteStore


def test_errnos_map_to_kinds_and_other_exceptions_are_no_fault(tmp_path: Path) -> None:
    assert kind_of(OSError(errno.ENOSPC, "No space left on device"), tmp_path) == "full"
    assert kind_of(OSError(errno.EROFS, "Read-only file system"), tmp_path) == "read-only"
    assert kind_of(OSError(errno.EIO, "Input/output error"), tmp_path) == "io"
    assert kind_of(ValueError("x"), tmp_path) is None
    assert store_fault(sqlite3.ProgrammingError("bad SQL"), tmp_path, "reading") is None


def test_a_file_that_is_no_database_is_damaged_and_never_written(tmp_path: Path) -> None:
    path = tmp_path / "certwright.sqlite"
    path.write_bytes(b"not a database at all" * 300)
    before = path.read_bytes()
    with pytest.raises(StoreFault) as info:
        SQLiteStore(path)
    assert info.value.kind == "damaged" and str(path) in str(info.value)
    assert "sqlite3 FILE .recover" in str(info.value)
    assert path.read_bytes() == before


def test_a_reader_opens_without_writing_and_refuses_transactions(tmp_path: Path) -> None:
    """No chmod, the database file unchanged; a transaction says it is read-only.
    (Where the folder is writable SQLite still makes its -shm beside the file, as for
    any reader; where it is not, the reader does without: tests/e2e/test_store_faults.py.)"""
    path = tmp_path / "certwright.sqlite"
    SQLiteStore(path).close()
    path.chmod(0o640)
    before = path.read_bytes()
    reader = SQLiteStore(path, readonly=True)
    assert reader.list_runs() == []
    with pytest.raises(StoreFault) as info, reader.transaction():
        pass
    assert info.value.kind == "read-only"
    reader.close()
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.read_bytes() == before


def test_io_errors_on_demand_become_a_fault_and_the_store_works_on_after(
        tmp_path: Path) -> None:
    flag = tmp_path / "eio"
    store = SQLiteStore(tmp_path / "s.sqlite", connect=FailingIO(flag).connect)
    flag.touch()
    with pytest.raises(StoreFault) as info:
        store.list_runs()
    assert info.value.kind == "io" and "I/O error" in str(info.value)
    with pytest.raises(StoreFault), store.transaction() as tx:
        tx.put_secrets("r1", {"a": 1})
    flag.unlink()
    assert store.load_secrets("r1") is None  # the failed transaction left nothing
    with store.transaction() as tx:
        tx.put_secrets("r1", {"a": 1})
    assert store.load_secrets("r1") == {"a": 1}
    store.close()
