"""The SQLite store: one file, WAL, a busy timeout, a versioned schema.

Plain `sqlite3` throughout. The journal's hot path is one prepared statement
(bench/bench_journal.py measures it against raw commits). sqlite-utils was
measured too: importing it costs about 0.17 s (more where it pulls in numpy),
paid by every command for a one-line table lookup, so the store does not use it.
"""

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from operator import itemgetter
from pathlib import Path

from flowmetal.codec import content_hash
from flowmetal.errors import StoreError, UserError
from flowmetal.store.base import ENDED, Store
from flowmetal.store import sqlite_api

BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's lock; FLOWMETAL_BUSY_TIMEOUT overrides

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
    # 5: the HTTP API's tokens (hashes only) and idempotency keys (flowmetal.store.sqlite_api).
    sqlite_api.MIGRATION,
    # 6: the release and prelude that started a run, and the digest rule its
    # journal uses (engine/gate.py, doc/architecture.md "Digests"). NULL: recorded by 0.1.0.
    """
    ALTER TABLE runs ADD COLUMN flowmetal_version TEXT;
    ALTER TABLE runs ADD COLUMN prelude_digest TEXT;
    ALTER TABLE runs ADD COLUMN digest_version INTEGER;
    """,
]

_ENDED_SQL = ", ".join(f"'{state}'" for state in ENDED)  # for "state IN (...)"
BLOB_GRACE = 3600.0  # seconds
PRUNE_BATCH = 200  # run trees deleted per transaction, so writers wait for prune only briefly


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
_journal_values = itemgetter(*JOURNAL_COLUMNS)  # an entry dict's values in column order (every key present)
JOURNAL_KEY = 1 << 32  # journal.key = runs.num * JOURNAL_KEY + seq (migration 3); seq < 2**32


class SqliteStore(sqlite_api.ApiTables, Store):
    def __init__(self, path, synchronous_full=False, busy_timeout_ms=None, readonly=False):
        """`readonly` (for commands that only read): when the schema is current, open without
        the migration's write transaction, so reading under WAL never waits for a writer."""
        self.path = str(path)
        self.busy_ms = busy_timeout_ms or BUSY_TIMEOUT_MS
        self.synchronous = "FULL" if synchronous_full else "NORMAL"
        self._local = threading.local()
        # Writers of this process take turns here instead of in SQLite's busy
        # handler, whose sleeps (up to 100 ms each) starve threads under contention.
        self._write_lock = threading.RLock()
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise StoreError(f"cannot open database {self.path}: directory {parent} does not exist")
        if not (readonly and self._schema_is_current()):
            self._migrate()

    # --- connections and transactions -------------------------------------

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_ms / 1000, isolation_level=None,
                                       check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
                self._enable_wal(conn)
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot open database {self.path}: {e}") from None
            self._local.conn = conn
            self._local.depth = 0
        return conn

    def _enable_wal(self, conn):
        """Switching a new database to WAL can answer "locked" at once, without the busy
        handler, while another process creates the same file: retry for the busy timeout."""
        deadline = time.monotonic() + self.busy_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def transaction(self):
        conn = self.conn
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._write_lock:
            self._exec(conn, "BEGIN IMMEDIATE")
            self._local.depth = 1
            try:
                yield
            except BaseException:
                self._local.depth = 0
                conn.execute("ROLLBACK")
                raise
            self._local.depth = 0
            self._exec(conn, "COMMIT")

    def _exec(self, conn, sql, params=()):
        try:
            return conn.execute(sql, params)
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _error(self, e):
        """The StoreError a user sees for a failed statement."""
        if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
            return StoreError(f"database {self.path} is locked by another process (waited {self.busy_ms / 1000:g}s)")
        return StoreError(f"database {self.path}: {e}")

    def x(self, sql, params=()):
        """Execute one statement (inside the current transaction, or alone)."""
        conn = self.conn
        if self._local.depth or sql.lstrip()[:6].upper() in ("SELECT", "PRAGMA", "WITH R"):
            return self._exec(conn, sql, params)
        with self._write_lock:
            return self._exec(conn, sql, params)

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self):
        for name, fn in MIGRATION_FUNCTIONS.items():
            self.conn.create_function(name, 1, fn, deterministic=True)
        with self.transaction():
            if self.x("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
                self.x("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                self.x("INSERT INTO meta VALUES ('schema_version', '0')")
            version = int(self.x("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"database {self.path} has schema version {version}, newer than this Flowmetal "
                    f"understands ({len(MIGRATIONS)}); upgrade Flowmetal"
                )
            for i in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        self.x(statement)
                self.x("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(i + 1),))

    def _schema_is_current(self):
        """True when the schema needs no migration (read without taking a write lock)."""
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError:
            return False
        return row is not None and row[0] == str(len(MIGRATIONS))

    def schema_version(self):
        return int(self.x("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # --- runs ----------------------------------------------------------------

    def insert_run(self, run):
        cols = ", ".join(run)
        marks = ", ".join("?" for _ in run)
        # num: the run's number in journal keys, never reused (runs are not deleted).
        self.x(f"INSERT INTO runs ({cols}, num) VALUES ({marks}, (SELECT coalesce(max(num), 0) + 1 FROM runs))",
               tuple(run.values()))

    def get_run(self, run_id):
        row = self.x("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def find_run(self, prefix):
        rows = self.x("SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                      (prefix, prefix + "\uffff")).fetchall()
        exact = [r for r in rows if r["id"] == prefix]
        if exact:
            return dict(exact[0])
        if not rows:
            from flowmetal.errors import NotFound

            raise NotFound(f"no run {prefix!r}")
        if len(rows) > 1:
            raise UserError(f"run id prefix {prefix!r} is ambiguous: it matches {rows[0]['id']}, {rows[1]['id']}, ...")
        return dict(rows[0])

    def list_runs(self, status=None, limit=50, parent_id=None, root_id=None):
        where, params = [], []
        for col, val in (("state", status), ("parent_id", parent_id), ("root_id", root_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self.x(f"SELECT * FROM runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [dict(r) for r in rows]

    def update_run(self, run_id, *, if_owner=None, **fields):
        fields.setdefault("updated_at", time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE runs SET {sets} WHERE id = ?"
        params = [*fields.values(), run_id]
        if if_owner is not None:
            sql += " AND owner = ?"
            params.append(if_owner)
        return self.x(sql, params).rowcount == 1

    def claim_run(self, owner, now, lease_until, root_id=None, run_id=None):
        scope, params = "", [now, now]
        if run_id is not None:
            scope, params = " AND id = ?", params + [run_id]
        elif root_id is not None:
            scope, params = " AND root_id = ?", params + [root_id]
        row = self.x(
            f"""UPDATE runs SET state = 'running', owner = ?, lease_expires = ?,
                   started_at = coalesce(started_at, ?), updated_at = ?, executions = executions + 1
               WHERE id = (
                   SELECT id FROM runs
                   WHERE (state = 'pending' OR (state = 'waiting' AND wake_at <= ?)
                          OR (state = 'running' AND lease_expires < ?)){scope}
                   ORDER BY coalesce(wake_at, created_at) LIMIT 1)
               RETURNING *""",
            (owner, lease_until, now, now, *params),
        ).fetchone()
        return dict(row) if row else None

    def renew_leases(self, owner, until):
        with self.transaction():
            self.x("UPDATE runs SET lease_expires = ? WHERE owner = ? AND state = 'running'", (until, owner))
            rows = self.x("SELECT id, cancel_requested, deadline FROM runs WHERE owner = ? AND state = 'running'",
                          (owner,)).fetchall()
        return [tuple(r) for r in rows]

    def descendants(self, run_id):
        rows = self.x("""WITH RECURSIVE d(id) AS (
                           SELECT id FROM runs WHERE parent_id = ?
                           UNION ALL SELECT r.id FROM runs r JOIN d ON r.parent_id = d.id)
                         SELECT id FROM d""", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def owned_runs(self, owner):
        return [tuple(r) for r in self.x(
            "SELECT id, cancel_requested, deadline FROM runs WHERE owner = ? AND state = 'running'", (owner,))]

    def running_runs(self):
        return [dict(r) for r in self.x("SELECT id, owner, lease_expires FROM runs WHERE state = 'running'")]

    def next_wake(self, root_id=None):
        sql = "SELECT min(wake_at) FROM runs WHERE state = 'waiting' AND wake_at IS NOT NULL"
        params = ()
        if root_id is not None:
            sql += " AND root_id = ?"
            params = (root_id,)
        return self.x(sql, params).fetchone()[0]

    def has_pending(self, root_id=None):
        sql = "SELECT 1 FROM runs WHERE state IN ('pending', 'running')"
        params = ()
        if root_id is not None:
            sql += " AND root_id = ?"
            params = (root_id,)
        return self.x(sql + " LIMIT 1", params).fetchone() is not None

    def data_version(self):
        return self.x("PRAGMA data_version").fetchone()[0]

    # --- sources -------------------------------------------------------------

    def pin_sources(self, run_id, texts):
        for name, text in texts.items():
            digest = content_hash(text)
            self.x("INSERT OR IGNORE INTO sources (hash, content) VALUES (?, ?)", (digest, text))
            self.x("INSERT OR REPLACE INTO run_sources (run_id, name, hash) VALUES (?, ?, ?)", (run_id, name, digest))

    def copy_sources(self, from_run, to_run):
        self.x("INSERT OR IGNORE INTO run_sources (run_id, name, hash) SELECT ?, name, hash FROM run_sources "
               "WHERE run_id = ?", (to_run, from_run))

    def pinned_sources(self, run_id):
        rows = self.x("""SELECT rs.name, s.content FROM run_sources rs JOIN sources s ON s.hash = rs.hash
                         WHERE rs.run_id = ?""", (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    # --- journal -------------------------------------------------------------

    def journal(self, run_id):
        rows = self.x(
            f"SELECT {', '.join(JOURNAL_COLUMNS)}, reexecuted FROM journal WHERE key BETWEEN "
            f"(SELECT num * {JOURNAL_KEY} FROM runs WHERE id = ?) AND "
            f"(SELECT num * {JOURNAL_KEY} + {JOURNAL_KEY - 1} FROM runs WHERE id = ?) ORDER BY key",
            (run_id, run_id))
        return [dict(r) for r in rows]

    # One statement both fences (only the owner of a running run writes) and keys the row.
    _INSERT_JOURNAL = (
        f"INSERT INTO journal (key, {', '.join(JOURNAL_COLUMNS)}) "
        f"SELECT num * {JOURNAL_KEY} + ?, {', '.join('?' for _ in JOURNAL_COLUMNS)} "
        f"FROM runs WHERE id = ? AND owner = ? AND state = 'running'"
    )

    def insert_journal(self, entry, owner):
        """The hot path of every effect: one prepared statement, committed alone unless in a transaction."""
        params = (entry["seq"], *_journal_values(entry), entry["run_id"], owner)
        conn = self.conn
        try:  # (what _exec does, without its frame)
            if self._local.depth:
                return conn.execute(self._INSERT_JOURNAL, params).rowcount == 1
            with self._write_lock:
                return conn.execute(self._INSERT_JOURNAL, params).rowcount == 1
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def update_journal(self, run_id, seq, owner, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur = self.x(
            f"UPDATE journal SET {sets} WHERE key = "
            f"(SELECT num * {JOURNAL_KEY} + ? FROM runs WHERE id = ? AND owner = ? AND state = 'running')",
            (*fields.values(), seq, run_id, owner),
        )
        return cur.rowcount == 1

    # --- logs ----------------------------------------------------------------

    def add_logs(self, run_id, rows):
        with self._write_lock:
            self.conn.executemany(
                "INSERT OR IGNORE INTO logs (run_id, seq, n, time, stream, line) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, *r) for r in rows],
            )

    def logs(self, run_id, after_rowid=0):
        return [dict(r) for r in self.x(
            "SELECT rowid, seq, n, time, stream, line FROM logs WHERE run_id = ? AND rowid > ? ORDER BY rowid",
            (run_id, after_rowid))]

    def max_log_rowid(self):
        return self.x("SELECT coalesce(max(rowid), 0) FROM logs").fetchone()[0]

    def tree_logs(self, root_id, after_rowid=0):
        return [dict(r) for r in self.x(
            """SELECT l.rowid, l.run_id, l.seq, l.n, l.time, l.stream, l.line FROM logs l
               JOIN runs r ON r.id = l.run_id WHERE r.root_id = ? AND l.rowid > ? ORDER BY l.rowid""",
            (root_id, after_rowid))]

    # --- signals -------------------------------------------------------------

    def insert_signal(self, run_id, name, payload, now):
        self.x("INSERT INTO signals (run_id, name, payload, sent_at) VALUES (?, ?, ?, ?)", (run_id, name, payload, now))

    def take_signal(self, run_id, name, seq):
        row = self.x("""SELECT id, payload FROM signals WHERE run_id = ? AND name = ? AND consumed_seq IS NULL
                        ORDER BY id LIMIT 1""", (run_id, name)).fetchone()
        if row is None:
            return None
        self.x("UPDATE signals SET consumed_seq = ? WHERE id = ?", (seq, row["id"]))
        return dict(row)

    def has_signal(self, run_id, name):
        return self.x("SELECT 1 FROM signals WHERE run_id = ? AND name = ? AND consumed_seq IS NULL LIMIT 1",
                      (run_id, name)).fetchone() is not None

    def signals(self, run_id):
        return [dict(r) for r in self.x("SELECT * FROM signals WHERE run_id = ? ORDER BY id", (run_id,))]

    # --- blobs ---------------------------------------------------------------

    def put_blob(self, data, now):
        digest = content_hash(data)
        self.x("INSERT INTO blobs (hash, data, touched_at) VALUES (?, ?, ?) "
               "ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at", (digest, data, now))
        return digest

    def get_blob(self, digest):
        row = self.x("SELECT data FROM blobs WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise StoreError(f"blob {digest} is missing from {self.path}")
        return row[0]

    # --- schedules and fires (the scheduler's state) -------------------------

    def schedules(self):
        return [dict(r) for r in self.x("SELECT * FROM schedules ORDER BY name")]

    def get_schedule(self, name):
        row = self.x("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def insert_schedule(self, row):
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return self.x(f"INSERT OR IGNORE INTO schedules ({cols}) VALUES ({marks})", tuple(row.values())).rowcount == 1

    def update_schedule(self, name, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        return self.x(f"UPDATE schedules SET {sets} WHERE name = ?", (*fields.values(), name)).rowcount == 1

    def insert_fire(self, fire):
        cols = ", ".join(fire)
        marks = ", ".join("?" for _ in fire)
        return self.x(f"INSERT OR IGNORE INTO fires ({cols}) VALUES ({marks})", tuple(fire.values())).rowcount == 1

    def update_fire(self, schedule, nominal, only_open=False, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE fires SET {sets} WHERE schedule = ? AND nominal = ?"
        if only_open:
            sql += " AND run_state IS NULL"
        return self.x(sql, (*fields.values(), schedule, nominal)).rowcount == 1

    def fires(self, schedule, limit=100, action=None):
        sql, params = "SELECT * FROM fires WHERE schedule = ?", [schedule]
        if action is not None:
            sql += " AND action = ?"
            params.append(action)
        rows = self.x(sql + " ORDER BY nominal DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    def buffered_fires(self, schedule):
        return [dict(r) for r in self.x(
            "SELECT * FROM fires WHERE schedule = ? AND action = 'buffered' ORDER BY nominal", (schedule,))]

    def schedules_with_buffered(self):
        return [r[0] for r in self.x("SELECT DISTINCT schedule FROM fires WHERE action = 'buffered'")]

    def ended_fires(self, limit=1000):
        return [dict(r) for r in self.x(
            f"""SELECT f.schedule, f.nominal, f.run_id, r.state, r.error, r.continued_as, r.started_at, r.ended_at
               FROM fires f JOIN runs r ON r.id = f.run_id
               WHERE f.action = 'started' AND f.run_state IS NULL
                 AND r.state IN ({_ENDED_SQL})
               LIMIT ?""", (limit,))]

    def active_schedule_runs(self, schedule):
        return [dict(r) for r in self.x(
            "SELECT id, state, cancel_requested FROM runs WHERE schedule = ? AND state IN ('pending', 'running', "
            "'waiting') ORDER BY id", (schedule,))]

    def fire_counts(self):
        out = {}
        for name, action, n in self.x("SELECT schedule, action, count(*) FROM fires GROUP BY schedule, action"):
            out.setdefault(name, {})[action] = n
        return out

    def put_sources(self, texts):
        hashes = {}
        for name, text in texts.items():
            digest = content_hash(text)
            self.x("INSERT OR IGNORE INTO sources (hash, content) VALUES (?, ?)", (digest, text))
            hashes[name] = digest
        return hashes

    def get_sources(self, hashes):
        out = {}
        for name, digest in hashes.items():
            row = self.x("SELECT content FROM sources WHERE hash = ?", (digest,)).fetchone()
            if row is None:
                raise StoreError(f"source {name} ({digest}) is missing from {self.path}")
            out[name] = row[0]
        return out

    # --- retention -------------------------------------------------------------

    # Top-level runs (no parent) that ended before ?1, with every descendant ended
    # before ?1 too. A child is deleted only with its top-level run, whose wait()
    # may still read it. Each incarnation of a continue_as_new chain is a run of its own
    # (top-level, or a child of the same parent as the first).
    _PRUNABLE = f"""
        WITH RECURSIVE tree(top, id, state, ended_at) AS (
            SELECT id, id, state, ended_at FROM runs
             WHERE parent_id IS NULL AND state IN ({_ENDED_SQL})
               AND ended_at < ?1
            UNION ALL
            SELECT t.top, r.id, r.state, r.ended_at FROM runs r JOIN tree t ON r.parent_id = t.id
        )
        SELECT top FROM tree GROUP BY top
        HAVING sum(state NOT IN ({_ENDED_SQL})) = 0
           AND max(coalesce(ended_at, 1e300)) < ?1
    """

    _TREES = """
        WITH RECURSIVE tree(id) AS (
            SELECT value FROM json_each(?)
            UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id
        )
        SELECT runs.id, runs.num FROM tree JOIN runs ON runs.id = tree.id
    """

    # Fires before ?1 whose outcome is recorded (or whose run is gone), never a buffered one, and never one
    # after its schedule's last_fire (fires are never planned at or before last_fire,
    # so a deleted row can never be fired again).
    _OLD_FIRES = """
        nominal < ?1 AND action != 'buffered'
         AND NOT (action = 'started' AND run_state IS NULL AND run_id IN (SELECT id FROM runs))
         AND nominal <= coalesce((SELECT last_fire FROM schedules s WHERE s.name = fires.schedule), -1e300)
    """

    def prune(self, before, now, dry_run=False):
        """Delete every top-level run that ended before `before` together with its
        descendants (when all of them ended before it too): their journals, logs,
        signals and pinned-source links; fires before `before` whose outcome is recorded;
        then sources and blobs nothing refers to any more. With `dry_run`, count instead
        (sources and blobs are then not counted). One transaction per PRUNE_BATCH trees."""
        tops = [r[0] for r in self.x(self._PRUNABLE, (before,))]
        counts = dict.fromkeys(("runs", "journal", "logs", "signals", "fires", "sources", "blobs"), 0)
        for i in range(0, len(tops), PRUNE_BATCH):
            with nullcontext() if dry_run else self.transaction():
                runs = self.x(self._TREES, (json.dumps(tops[i:i + PRUNE_BATCH]),)).fetchall()
                ids = [(run_id,) for run_id, _ in runs]
                counts["runs"] += len(runs)
                counts["journal"] += self._delete(dry_run, "journal", "key BETWEEN ? AND ?",
                                                  [(n * JOURNAL_KEY, n * JOURNAL_KEY + JOURNAL_KEY - 1) for _, n in runs])
                counts["logs"] += self._delete(dry_run, "logs", "run_id = ?", ids)
                counts["signals"] += self._delete(dry_run, "signals", "run_id = ?", ids)
                self._delete(dry_run, "run_sources", "run_id = ?", ids)
                self._delete(dry_run, "runs", "id = ?", ids)
        with nullcontext() if dry_run else self.transaction():
            counts["fires"] = self._delete(dry_run, "fires", self._OLD_FIRES, [(before,)])
            if not dry_run:
                counts["sources"] = self._delete(False, "sources", self._UNUSED_SOURCES, [()])
        if not dry_run:
            counts["blobs"] = self._delete_unreferenced_blobs(now - BLOB_GRACE)
        return counts

    _UNUSED_SOURCES = """
        hash NOT IN (SELECT hash FROM run_sources) AND hash NOT IN
        (SELECT j.value FROM schedules, json_each(schedules.sources) j WHERE schedules.sources IS NOT NULL)
    """

    def _delete(self, dry_run, table, where, params):
        """Delete (with dry_run: count) the rows of `table` matching `where`, once per parameter tuple."""
        if dry_run:
            return sum(self.x(f"SELECT count(*) FROM {table} WHERE {where}", p).fetchone()[0] for p in params)
        try:
            return self.conn.executemany(f"DELETE FROM {table} WHERE {where}", params).rowcount
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _delete_unreferenced_blobs(self, touched_before):
        """Blobs no journal result refers to and not written since `touched_before`. The
        references are read outside the write transaction: a blob written after that read
        is newer than `touched_before`, so it is not a candidate."""
        referenced = set()
        for (text,) in self.x("""SELECT result FROM journal WHERE result LIKE '{"$%'"""):
            doc = json.loads(text)
            if "$blob" in doc:
                referenced.add(doc["$blob"])
            referenced.update((doc.get("$parts") or {}).values())
        stale = [r[0] for r in self.x("SELECT hash FROM blobs WHERE touched_at < ?", (touched_before,))]
        with self.transaction():
            return self._delete(False, "blobs", "hash = ? AND touched_at < ?",
                                [(h, touched_before) for h in stale if h not in referenced])
