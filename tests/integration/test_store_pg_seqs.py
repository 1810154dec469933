"""The PostgreSQL store's journal numbers: read with the write lock, moved with the rows.

The statement that takes the write lock reads the journal's next seq, and the statement
that writes the last journal rows moves the sequence on; these show that the numbers stay
dense and unique when transactions write no journal, when one writes more rows than one
INSERT holds, and when two stores (two daemons) write one after the other.
"""
from __future__ import annotations

from pathlib import Path

from certwright.state import names as N
from certwright.state._sqlite_tx import ROWS_PER_INSERT
from certwright.state.contract import entry
from certwright.state.postgres import PostgresStore
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture


def _last_value(store: PostgresStore) -> int:
    rows = store.query("reading", f"SELECT pg_sequence_last_value(pg_get_serial_sequence("
                                  f"'{N.T_JOURNAL}', 'seq')::regclass)")
    return int(rows[0][0])


def test_numbers_are_dense_across_stores_and_transactions_without_a_journal(
        tmp_path: Path, postgres: Cluster) -> None:
    url = postgres.store_url(str(tmp_path))
    one, two = PostgresStore(url), PostgresStore(url)
    try:
        seqs = []
        for i in range(6):
            store = (one, two)[i % 2]
            with store.transaction() as tx:
                seqs.append(tx.append(entry(f"r{i}", 1)))
            with store.transaction() as tx:  # no journal: no number taken
                tx.put_secrets(f"r{i}", {"inputs": {}, "outputs": {}})
        assert seqs == list(range(seqs[0], seqs[0] + 6))
        assert _last_value(one) == seqs[-1]
    finally:
        one.close()
        two.close()


def test_a_transaction_of_more_rows_than_one_insert_moves_the_sequence_past_them(
        tmp_path: Path, postgres: Cluster) -> None:
    store = PostgresStore(postgres.store_url(str(tmp_path)))
    try:
        n = ROWS_PER_INSERT * 2 + 7
        with store.transaction() as tx:
            seqs = [tx.append(entry("big", i)) for i in range(n)]
        assert [e.seq for e in store.journal("big")] == seqs
        assert _last_value(store) == seqs[-1]
        with store.transaction() as tx:
            assert tx.append(entry("after", 1)) == seqs[-1] + 1
    finally:
        store.close()
