"""The SQLite schema: its migrations, applied in order, and the constants of its layout.

Each entry of MIGRATIONS migrates the schema from version i to i+1. Never edit
one that shipped; append a new one (as a string of `;`-separated statements).
"""

import math
from operator import itemgetter

from flowmetal.store.base import ENDED
from flowmetal.store.sqlite import api, deferred, workers

# Each entry migrates the schema from version i to i+1. Never edit one that shipped.
MIGRATIONS = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        file TEXT NOT NULL,
        function TEXT NOT NULL,
        args TEXT NOT NULL,
        posargs TEXT,
        state TEXT NOT NULL,
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        updated_at REAL,
        root_dir TEXT,
        parent_id TEXT,
        root_id TEXT,
        continued_from TEXT,
        continued_as TEXT,
        schedule TEXT,
        fire_time REAL,
        waiting_for TEXT,
        wake_at REAL,
        deadline REAL,
        cancel_requested TEXT,
        owner TEXT,
        lease_expires REAL,
        executions INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_state ON runs(state, wake_at);
    CREATE INDEX runs_parent ON runs(parent_id);
    CREATE INDEX runs_root ON runs(root_id);
    CREATE TABLE journal (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        builtin TEXT NOT NULL,
        args TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        error TEXT,
        data TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        reexecuted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE sources (hash TEXT PRIMARY KEY, content TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE run_sources (
        run_id TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL,
        time REAL NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL,
        UNIQUE (run_id, seq, n)
    );
    CREATE TABLE signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
        sent_at REAL NOT NULL, consumed_seq INTEGER
    );
    CREATE INDEX signals_run ON signals(run_id, name, consumed_seq);
    CREATE TABLE blobs (hash TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
    """,
    # 2: the scheduler's state (flowmetal.schedule.daemon). A schedule row is the
    # persisted truth about when it last fired; a fire row, unique per schedule and
    # nominal time, is inserted in the same transaction as the run it starts.
    """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        since REAL NOT NULL,
        enabled INTEGER NOT NULL,
        last_fire REAL,
        file TEXT NOT NULL,
        line INTEGER NOT NULL,
        sources TEXT,
        removed_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE fires (
        schedule TEXT NOT NULL,
        nominal REAL NOT NULL,
        action TEXT NOT NULL,
        reason TEXT,
        run_id TEXT,
        recorded_at REAL NOT NULL,
        through REAL,
        start_at REAL,
        run_state TEXT,
        followup_run TEXT,
        UNIQUE (schedule, nominal)
    );
    CREATE INDEX fires_buffered ON fires(schedule, nominal) WHERE action = 'buffered';
    CREATE INDEX fires_open ON fires(run_id) WHERE action = 'started' AND run_state IS NULL;
    CREATE INDEX runs_schedule ON runs(schedule, state);
    """,
    # 3: the journal keyed by one integer, runs.num * 2**32 + seq (JOURNAL_KEY), so one
    # run's entries are one rowid range. A rowid table appends in place: about 1.07 WAL
    # frames per entry, against 1.5 for the (run_id, seq) WITHOUT ROWID key, whose index
    # b-tree splits its pages half full. That made every effect's commit half again as
    # dear as a raw one (bench/bench_journal.py). And now() is journaled as integer
    # nanoseconds; recorded seconds are rewritten by seconds_to_ns (below), so runs in
    # flight replay the very value they saw.
    """
    ALTER TABLE runs ADD COLUMN num INTEGER;
    UPDATE runs SET num = rowid;
    CREATE UNIQUE INDEX runs_num ON runs(num);
    CREATE TABLE journal_v3 (
        key INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        builtin TEXT NOT NULL,
        args TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        error TEXT,
        data TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        reexecuted INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO journal_v3 SELECT r.num * 4294967296 + j.seq, j.* FROM journal j JOIN runs r ON r.id = j.run_id;
    DROP TABLE journal;
    ALTER TABLE journal_v3 RENAME TO journal;
    UPDATE journal SET result = flowmetal_seconds_to_ns(result) WHERE builtin = 'now' AND status = 'completed';
    """,
    # 4: when a blob was last written. `prune` deletes a blob no journal entry refers to
    # only once it has not been written for BLOB_GRACE, so a blob just written for an
    # entry whose own commit is still to come is never taken.
    """
    ALTER TABLE blobs ADD COLUMN touched_at REAL NOT NULL DEFAULT 0;
    """,
    # 5: the HTTP API's tokens (hashes only) and idempotency keys (store/sqlite/api.py).
    api.MIGRATION,
    # 6: the release and prelude that started a run, and the digest rule its
    # journal uses (engine/gate.py, doc/architecture.md "Digests"). NULL: recorded by 0.1.0.
    """
    ALTER TABLE runs ADD COLUMN flowmetal_version TEXT;
    ALTER TABLE runs ADD COLUMN prelude_digest TEXT;
    ALTER TABLE runs ADD COLUMN digest_version INTEGER;
    """,
    # 7: worker processes' identities and heartbeats (`flowmetal workers`, store/sqlite/workers.py).
    workers.MIGRATION,
    # 8: `flowmetal fork` / `retry` (engine/fork.py): the run a run was forked from and
    # how many of its journal entries were copied. NULL: not a fork.
    """
    ALTER TABLE runs ADD COLUMN forked_from TEXT;
    ALTER TABLE runs ADD COLUMN forked_at INTEGER;
    """,
    # 9: claims in O(log n) (issue 17). A claimable run's due time is an index on an
    # expression (CLAIM_DUE below, written out here as it shipped): pending from created_at,
    # waiting from wake_at (NULL: waits to be woken), running from lease_expires (a dead
    # owner's run). A claim is one search of this index in due order, never a sort of
    # every claimable run; the second index does the same for a claim within one tree
    # (`flowmetal run`). No column: every statement that changes a run keeps the index
    # right by itself, and CREATE INDEX fills it from the rows already there, so runs in
    # flight are claimable as before.
    """
    CREATE INDEX runs_due ON runs((CASE state WHEN 'pending' THEN created_at WHEN 'waiting' THEN wake_at
        WHEN 'running' THEN lease_expires END)) WHERE state IN ('pending', 'waiting', 'running');
    CREATE INDEX runs_due_root ON runs(root_id, (CASE state WHEN 'pending' THEN created_at WHEN 'waiting' THEN wake_at
        WHEN 'running' THEN lease_expires END)) WHERE state IN ('pending', 'waiting', 'running');
    """,
    # 10: deferred effects, completed from outside the process (store/sqlite/deferred.py).
    deferred.MIGRATION,
    # 11: task leases: the claiming worker, the lease a heartbeat extends by, and how many
    # leases expired unfinished (store/sqlite/deferred.py, engine/tasks.py).
    deferred.TASK_MIGRATION,
]

# A run's due time as the claim query writes it: the very expression of migration 9's
# indexes (SQLite uses an index on an expression only for that expression, token for token
# up to whitespace; tests/test_perf_claims.py checks the query plan).
CLAIM_DUE = ("(CASE state WHEN 'pending' THEN created_at WHEN 'waiting' THEN wake_at "
             "WHEN 'running' THEN lease_expires END)")
CLAIMABLE = "state IN ('pending', 'waiting', 'running')"  # the indexes' WHERE, repeated by the query

ENDED_SQL = ", ".join(f"'{state}'" for state in ENDED)  # for "state IN (...)"


def seconds_to_ns(text):
    """Migration 3: a now() recorded as float seconds -> integer nanoseconds n such that
    n / 1e9, as now() computes it (like time.time() does), is that same float. Every
    recorded value came from time.time(), which is such a quotient, so one is found
    among the integers nearest to seconds * 1e9 that a float can hold."""
    seconds = float(text)
    n = int(seconds * 1e9)
    step = max(1, int(math.ulp(float(n))))
    for k in (0, -1, 1, -2, 2, -3, 3):
        if (n + k * step) / 1e9 == seconds:
            return n + k * step
    return n  # (not from time.time(): the nearest there is)


MIGRATION_FUNCTIONS = {"flowmetal_seconds_to_ns": seconds_to_ns}  # SQL functions the migrations call

JOURNAL_COLUMNS = ("run_id", "seq", "builtin", "args", "digest", "status", "result", "error", "data",
                   "started_at", "ended_at")
journal_values = itemgetter(*JOURNAL_COLUMNS)  # an entry dict's values in column order (every key present)
JOURNAL_KEY = 1 << 32  # journal.key = runs.num * JOURNAL_KEY + seq (migration 3); seq < 2**32
