"""The SQLite store: one file, WAL, a busy timeout, a versioned schema.

Plain `sqlite3` throughout. The journal's hot path is one prepared statement
(bench/bench_journal.py measures it against raw commits). sqlite-utils was
measured too: importing it costs about 0.17 s (more where it pulls in numpy),
paid by every command for a one-line table lookup, so the store does not use it.

One module per table family: schema (migrations), runs (runs, leases, pinned
sources), journal (journal, logs, signals, blobs), schedules (schedules, fires),
retention (prune), deferred (deferred effects). This module holds the connections and transactions.

Files: a new database is created 0600 (its -wal and -shm files inherit that
mode from it), whatever the umask; `private_dir` creates the `.flowmetal`
directory 0700.

Read-only mode (`readonly=True`): the connection is `query_only`, the schema
is only checked (a schema that needs migrating is a clear error), and no
statement ever asks for the write lock, so `runs`, `show` and `logs` read
while another process holds it (WAL lets readers in).
"""

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from flowmetal.clock import SYSTEM
from flowmetal.errors import StoreError
from flowmetal.store.base import Store
from flowmetal.store.sqlite.api import ApiTables
from flowmetal.store.sqlite.deferred import DeferredTables
from flowmetal.store.sqlite.journal import JournalTables
from flowmetal.store.sqlite.retention import BLOB_GRACE, PRUNE_BATCH, Retention  # noqa: F401 (re-exported)
from flowmetal.store.sqlite.runs import RunsTable
from flowmetal.store.sqlite.schedules import ScheduleTables
from flowmetal.store.sqlite.workers import WorkersTable
from flowmetal.store.sqlite.schema import (  # noqa: F401 (re-exported)
    JOURNAL_COLUMNS, JOURNAL_KEY, MIGRATION_FUNCTIONS, MIGRATIONS, seconds_to_ns,
)

BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's lock; FLOWMETAL_BUSY_TIMEOUT overrides
CHANGE_POLL = 0.1  # seconds between looks at PRAGMA data_version in wait_for_change
DB_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path):
    """Create directory `path` (and missing parents) if needed; a directory created here is
    0700 whatever the umask. An existing one is left as it is."""
    path = Path(path)
    if path.is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def _create_private_file(path):
    """An empty file (an empty SQLite database) readable by its owner only, unless it exists."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, DB_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, DB_MODE)  # (the umask cannot widen it, but a strange one could narrow it)
    finally:
        os.close(fd)


class SqliteStore(RunsTable, JournalTables, ScheduleTables, Retention, ApiTables, WorkersTable, DeferredTables,
                  Store):
    def __init__(self, path, synchronous_full=False, busy_timeout_ms=None, *, clock=None, readonly=False):
        self.path = str(path)
        self.clock = clock or SYSTEM
        self.readonly = readonly
        self.busy_ms = busy_timeout_ms or BUSY_TIMEOUT_MS
        self.synchronous = "FULL" if synchronous_full else "NORMAL"
        self._local = threading.local()
        # Writers of this process take turns here instead of in SQLite's busy
        # handler, whose sleeps (up to 100 ms each) starve threads under contention.
        self._write_lock = threading.RLock()
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise StoreError(f"cannot open database {self.path}: directory {parent} does not exist")
        if readonly:
            if not Path(self.path).is_file():
                raise StoreError(f"no database at {self.path} (nothing has been stored there yet)")
            self._check_schema()
        else:
            _create_private_file(self.path)
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
                if self.readonly:
                    conn.execute("PRAGMA query_only = ON")  # (a WAL database stays WAL: no pragma needed)
                else:
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
        # (real time, whatever the store's clock: this waits for another process)
        deadline = SYSTEM.monotonic() + self.busy_ms / 1000
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or SYSTEM.monotonic() > deadline:
                    raise
                SYSTEM.sleep(0.01)

    @contextmanager
    def transaction(self, tree=None):
        # (`tree` changes nothing here: SQLite has one writer at a time in any case)
        conn = self.conn
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._write_lock:
            self._exec(conn, "BEGIN" if self.readonly else "BEGIN IMMEDIATE")  # (read-only: a snapshot)
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

    def _version(self):
        """The schema version, read without a write lock (0: no schema yet)."""
        if self.x("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
            return 0
        return int(self.x("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def _too_new(self, version):
        return StoreError(f"database {self.path} has schema version {version}, newer than this Flowmetal "
                          f"understands ({len(MIGRATIONS)}); upgrade Flowmetal")

    def _check_schema(self):
        version = self._version()
        if version > len(MIGRATIONS):
            raise self._too_new(version)
        if version < len(MIGRATIONS):  # an upgrade: migrate once (briefly writing), then only read
            SqliteStore(self.path, busy_timeout_ms=self.busy_ms, clock=self.clock).close()

    def _migrate(self):
        for name, fn in MIGRATION_FUNCTIONS.items():
            self.conn.create_function(name, 1, fn, deterministic=True)
        version = self._version()  # a current schema is only read: no write lock for opening
        if version > len(MIGRATIONS):
            raise self._too_new(version)
        if version == len(MIGRATIONS):
            return
        with self.transaction():
            if self.x("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
                self.x("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                self.x("INSERT INTO meta VALUES ('schema_version', '0')")
            version = self._version()  # (again, under the lock: another process may have migrated)
            if version > len(MIGRATIONS):
                raise self._too_new(version)
            for i in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        self.x(statement)
                self.x("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(i + 1),))

    def schema_version(self):
        return self._version()

    def wait_for_change(self, timeout, event=None):
        end = self.clock.monotonic() + timeout
        while True:
            current = self.x("PRAGMA data_version").fetchone()[0]  # changes when another connection commits
            seen = getattr(self._local, "seen_version", None)
            self._local.seen_version = current
            if seen is not None and current != seen:
                return True
            left = end - self.clock.monotonic()
            if left <= 0:
                return False
            if event is None:
                self.clock.sleep(min(CHANGE_POLL, left))
            elif self.clock.wait(event, min(CHANGE_POLL, left)):
                return True
