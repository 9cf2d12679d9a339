"""The PostgreSQL schema: its own migrations, applied in order on open.

Same tables and columns as the SQLite store (store/sqlite/schema.py), in
PostgreSQL's types: times are epoch seconds in double precision, so rows read
the same from either store. Each entry of MIGRATIONS migrates version i to
i+1; never edit one that shipped, append a new one.
"""

from flowmetal.store.base import ENDED
from flowmetal.store.postgres import deferred

MIGRATIONS = [
    # 1: every table of SQLite schema version 6 at once.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        num BIGINT NOT NULL UNIQUE,
        file TEXT NOT NULL,
        function TEXT NOT NULL,
        args TEXT NOT NULL,
        posargs TEXT,
        state TEXT NOT NULL,
        result TEXT,
        error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        ended_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION,
        root_dir TEXT,
        parent_id TEXT,
        root_id TEXT,
        continued_from TEXT,
        continued_as TEXT,
        schedule TEXT,
        fire_time DOUBLE PRECISION,
        waiting_for TEXT,
        wake_at DOUBLE PRECISION,
        deadline DOUBLE PRECISION,
        cancel_requested TEXT,
        owner TEXT,
        lease_expires DOUBLE PRECISION,
        executions BIGINT NOT NULL DEFAULT 0,
        flowmetal_version TEXT,
        prelude_digest TEXT,
        digest_version BIGINT
    );
    CREATE SEQUENCE runs_num_seq OWNED BY runs.num;
    ALTER TABLE runs ALTER COLUMN num SET DEFAULT nextval('runs_num_seq');
    -- claims scan this index in due order; only runs that have not ended are in it
    CREATE INDEX runs_claim ON runs ((coalesce(wake_at, created_at))) WHERE state IN ('pending', 'waiting', 'running');
    CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
    CREATE INDEX runs_parent ON runs (parent_id);
    CREATE INDEX runs_root ON runs (root_id);
    CREATE INDEX runs_schedule ON runs (schedule, state);
    CREATE TABLE journal (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        builtin TEXT NOT NULL,
        args TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        error TEXT,
        data TEXT,
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        reexecuted BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE sources (hash TEXT PRIMARY KEY, content TEXT NOT NULL);
    CREATE TABLE run_sources (
        run_id TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE logs (
        rowid BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL, seq BIGINT NOT NULL, n BIGINT NOT NULL,
        time DOUBLE PRECISION NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL,
        UNIQUE (run_id, seq, n)
    );
    CREATE TABLE signals (
        id BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL, consumed_seq BIGINT
    );
    CREATE INDEX signals_run ON signals (run_id, name, consumed_seq);
    CREATE TABLE blobs (hash TEXT PRIMARY KEY, data TEXT NOT NULL,
                        touched_at DOUBLE PRECISION NOT NULL DEFAULT 0);
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        since DOUBLE PRECISION NOT NULL,
        enabled BIGINT NOT NULL,
        last_fire DOUBLE PRECISION,
        file TEXT NOT NULL,
        line BIGINT NOT NULL,
        sources TEXT,
        removed_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE fires (
        schedule TEXT NOT NULL,
        nominal DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL,
        reason TEXT,
        run_id TEXT,
        recorded_at DOUBLE PRECISION NOT NULL,
        through DOUBLE PRECISION,
        start_at DOUBLE PRECISION,
        run_state TEXT,
        followup_run TEXT,
        UNIQUE (schedule, nominal)
    );
    CREATE INDEX fires_buffered ON fires (schedule, nominal) WHERE action = 'buffered';
    CREATE INDEX fires_open ON fires (run_id) WHERE action = 'started' AND run_state IS NULL;
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION
    );
    CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        request TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: worker processes' identities and heartbeats (`flowmetal workers`).
    """
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        stopped_at DOUBLE PRECISION
    );
    """,
    # 3: `flowmetal fork` / `retry` (engine/fork.py): the run a run was forked from and how
    # many of its journal entries were copied. NULL: not a fork.
    """
    ALTER TABLE runs ADD COLUMN forked_from TEXT;
    ALTER TABLE runs ADD COLUMN forked_at BIGINT;
    """,
    # 4: claims in due order whatever the state (as SQLite's migration 9): pending from
    # created_at, waiting from wake_at, a dead owner's run from when its lease expired.
    """
    DROP INDEX runs_claim;
    CREATE INDEX runs_due ON runs ((CASE state WHEN 'pending' THEN created_at WHEN 'waiting' THEN wake_at WHEN 'running' THEN lease_expires END)) WHERE state IN ('pending', 'waiting', 'running');
    """,
    # 5: deferred effects, completed from outside the process (store/postgres/deferred.py).
    deferred.MIGRATION,
    # 6: task leases: the claiming worker, the lease a heartbeat extends by, and how many
    # leases expired unfinished (as SQLite's migration 11).
    deferred.TASK_MIGRATION,
]

ENDED_SQL = ", ".join(f"'{state}'" for state in ENDED)
