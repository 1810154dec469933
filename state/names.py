"""Every table, index and file name of the store, in one place (certmagic's KeyBuilder)."""
from __future__ import annotations

DB_FILE = "certwright.sqlite"
LOCK_DIR = "locks"
RUNS_DIR = "runs"
DAEMON_LOCK = "daemon.lock"

T_META = "meta"
T_SPECS = "specs"
T_RUNS = "runs"
T_JOURNAL = "journal"
T_TIMERS = "timers"
T_CORRELATIONS = "correlations"
T_PROCESSED = "processed"
T_SECRETS = "secrets"
T_CERTIFICATES = "certificates"
T_RENEWALS = "renewals"
T_DAEMONS = "daemons"
T_ARTEFACTS = "artefacts"
T_LEASES = "leases"            # PostgreSQL only: which daemon drives a run now
T_LEASE_LOG = "lease_log"      # PostgreSQL only: every tenure of a lease, kept
S_LEASE_TOKENS = "lease_tokens"  # PostgreSQL only: fencing tokens, ever increasing

# Schema migrations, applied in order; meta.schema_version says how many ran.
# Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE {T_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE {T_SPECS} (hash TEXT PRIMARY KEY, name TEXT NOT NULL, source TEXT NOT NULL,
                            text TEXT NOT NULL, created TEXT NOT NULL);
    CREATE TABLE {T_RUNS} (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, spec_hash TEXT NOT NULL,
                           state TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL,
                           created TEXT NOT NULL, updated TEXT NOT NULL);
    CREATE INDEX runs_status ON {T_RUNS}(status);
    CREATE TABLE {T_JOURNAL} (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                              at TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
    CREATE INDEX journal_run ON {T_JOURNAL}(run_id, seq);
    CREATE TABLE {T_TIMERS} (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                             entry INTEGER NOT NULL, kind TEXT NOT NULL, due TEXT NOT NULL);
    CREATE INDEX timers_due ON {T_TIMERS}(due);
    CREATE INDEX timers_run ON {T_TIMERS}(run_id);
    CREATE TABLE {T_CORRELATIONS} (key TEXT NOT NULL, run_id TEXT NOT NULL, entry INTEGER NOT NULL,
                                   PRIMARY KEY (key, run_id));
    CREATE INDEX correlations_run ON {T_CORRELATIONS}(run_id);
    CREATE TABLE {T_PROCESSED} (source TEXT NOT NULL, ident TEXT NOT NULL, run_id TEXT,
                                at TEXT NOT NULL, PRIMARY KEY (source, ident));
    """,
    # 2: a run's secrets (secret inputs, secret step outputs) beside its journal, never in
    # it: written in the same transaction as the entry that refers to them.
    f"""
    CREATE TABLE {T_SECRETS} (run_id TEXT PRIMARY KEY, body TEXT NOT NULL);
    """,
    # 3: the certificate inventory, one row per certificate name (its current version);
    # the record's other fields are in body (see records.CertificateRecord).
    f"""
    CREATE TABLE {T_CERTIFICATES} (name TEXT PRIMARY KEY, run_id TEXT NOT NULL,
                                   renew_at TEXT, body TEXT NOT NULL);
    """,
    # the renewal schedule's memory, one row per certificate name: a renewal run in
    # flight and the back-off after failed ones (see records.RenewalRecord); when a
    # certificate is due comes from its certificates row.
    f"""
    CREATE TABLE {T_RENEWALS} (name TEXT PRIMARY KEY, next_at TEXT, body TEXT NOT NULL);
    """,
    # 5: the daemons serving the store, one row per daemon id, rewritten by its heartbeat
    # (see records.DaemonRecord): `status` shows them and which went stale.
    f"""
    CREATE TABLE {T_DAEMONS} (id TEXT PRIMARY KEY, heartbeat TEXT NOT NULL, body TEXT NOT NULL);
    """,
    # 6: nothing here; PostgreSQL adds run leases (several daemons), SQLite keeps run locks
    # and one daemon per store. Kept so both lists number their versions alike.
    "",
    # 7: a run's host (where its host-bound steps run; '' for runs made before: any host)
    # and the host it waits for (NULL: none), beside the body so a daemon's claim of free
    # runs filters on it (see engine.run.hosts).
    f"""
    ALTER TABLE {T_RUNS} ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE {T_RUNS} ADD COLUMN wants_host TEXT;
    """,
    # 8: what a run made (its key, CSR, certificate, chain), sealed with the store key
    # when there is one (see state.artefacts): a run moves between hosts without files.
    f"""
    CREATE TABLE {T_ARTEFACTS} (run_id TEXT NOT NULL, name TEXT NOT NULL,
                                body TEXT NOT NULL, PRIMARY KEY (run_id, name));
    """,
)

# The same migrations for PostgreSQL, numbered alike: entry N of both lists makes the same
# schema version N (a test checks the lists are equally long). Journal seqs and timer ids
# come from sequences, which, like AUTOINCREMENT, never hand out a number twice.
PG_MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE {T_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE {T_SPECS} (hash TEXT PRIMARY KEY, name TEXT NOT NULL, source TEXT NOT NULL,
                            text TEXT NOT NULL, created TEXT NOT NULL);
    CREATE TABLE {T_RUNS} (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, spec_hash TEXT NOT NULL,
                           state TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL,
                           created TEXT NOT NULL, updated TEXT NOT NULL);
    CREATE INDEX runs_status ON {T_RUNS}(status);
    CREATE TABLE {T_JOURNAL} (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                              run_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL,
                              data TEXT NOT NULL);
    CREATE INDEX journal_run ON {T_JOURNAL}(run_id, seq);
    CREATE TABLE {T_TIMERS} (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                             run_id TEXT NOT NULL, entry INTEGER NOT NULL, kind TEXT NOT NULL,
                             due TEXT NOT NULL);
    CREATE INDEX timers_due ON {T_TIMERS}(due);
    CREATE INDEX timers_run ON {T_TIMERS}(run_id);
    CREATE TABLE {T_CORRELATIONS} (key TEXT NOT NULL, run_id TEXT NOT NULL,
                                   entry INTEGER NOT NULL, PRIMARY KEY (key, run_id));
    CREATE INDEX correlations_run ON {T_CORRELATIONS}(run_id);
    CREATE TABLE {T_PROCESSED} (source TEXT NOT NULL, ident TEXT NOT NULL, run_id TEXT,
                                at TEXT NOT NULL, PRIMARY KEY (source, ident));
    """,
    f"""
    CREATE TABLE {T_SECRETS} (run_id TEXT PRIMARY KEY, body TEXT NOT NULL);
    """,
    f"""
    CREATE TABLE {T_CERTIFICATES} (name TEXT PRIMARY KEY, run_id TEXT NOT NULL,
                                   renew_at TEXT, body TEXT NOT NULL);
    """,
    f"""
    CREATE TABLE {T_RENEWALS} (name TEXT PRIMARY KEY, next_at TEXT, body TEXT NOT NULL);
    """,
    f"""
    CREATE TABLE {T_DAEMONS} (id TEXT PRIMARY KEY, heartbeat TEXT NOT NULL, body TEXT NOT NULL);
    """,
    # several daemons (PostgreSQL only; SQLite keeps run locks): state.leases_pg
    f"""
    CREATE SEQUENCE {S_LEASE_TOKENS};
    CREATE TABLE {T_LEASES} (run_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
                             token BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
    CREATE INDEX leases_owner ON {T_LEASES}(owner);
    CREATE TABLE {T_LEASE_LOG} (run_id TEXT NOT NULL, token BIGINT NOT NULL,
                                owner TEXT NOT NULL, taken_at TIMESTAMPTZ NOT NULL,
                                ended_at TIMESTAMPTZ, how TEXT NOT NULL, ended TEXT,
                                PRIMARY KEY (run_id, token));
    """,
    f"""
    ALTER TABLE {T_RUNS} ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE {T_RUNS} ADD COLUMN wants_host TEXT;
    CREATE INDEX runs_wants_host ON {T_RUNS}(wants_host) WHERE wants_host IS NOT NULL;
    """,
    f"""
    CREATE TABLE {T_ARTEFACTS} (run_id TEXT NOT NULL, name TEXT NOT NULL,
                                body TEXT NOT NULL, PRIMARY KEY (run_id, name));
    """,
)

# PostgreSQL advisory locks are keyed (namespace, key); ours are per schema, so two stores
# in one database (two schemas) never wait for each other. The key is hashtext(schema).
PG_LOCK_WRITE = 0x63770001    # a write transaction (as SQLite's BEGIN IMMEDIATE)
PG_LOCK_MIGRATE = 0x63770002  # applying schema migrations
PG_LOCK_DAEMON = 0x63770003   # a daemon serving the store (held for its session)

# LISTEN/NOTIFY wake-ups (state.notify_pg): one channel per schema, so daemons of two stores
# in one database never hear each other; a channel name is at most 63 bytes, hence the hash.
PG_WAKE_CHANNEL = "'certwright_wake_' || left(md5(current_schema()), 12)"  # an SQL expression
