"""The PostgreSQL store: many machines on one database (SPEC sections 3 and 7).

Selected by a `postgresql://` (or `postgres://`) URL in `--db` / FLOWMETAL_DB
(store.open_store). psycopg 3 and psycopg-pool are imported only here, so
commands on SQLite never pay for them.

Connections: a pool (FLOWMETAL_PG_POOL connections at most, default 10) lent
per statement, or for a whole `transaction()`; plus, per thread that calls
`wait_for_change`, one autocommit connection that LISTENs on the channel
`flowmetal`. Every statement that makes a run runnable (a new run, a wake, a
release, a signal, a run's end, a suspension with a wake time, a cancel
request) raises `NOTIFY flowmetal` in its own transaction, so waiting workers
on every machine hear of it at its commit.

Time: leases, started/updated/ended times are the database server's clock
(statement_timestamp()), never the worker's, unless a `clock` is injected
(the contract tests move a manual clock): then that clock's time is sent.

Timeouts: every pooled connection sets lock_timeout (FLOWMETAL_PG_LOCK_TIMEOUT, seconds,
default 10) and statement_timeout (FLOWMETAL_PG_STATEMENT_TIMEOUT, default 300); 0 turns one
off. A lock another session holds past the first, or a statement past the second, ends as a
one-line StoreError (the CLI: exit 2) instead of a wait without end.

Isolation: each method is one statement (or its own short transaction with its
NOTIFY). `transaction()` takes a transaction-scoped advisory lock first, so
transactions that write are serialized as SQLite's BEGIN IMMEDIATE ones are;
single statements (claims, journal writes) never take it and run in parallel,
protected by their own conditions and row locks (claims use FOR UPDATE SKIP
LOCKED).
"""

import os
import threading
from contextlib import contextmanager

from flowmetal.clock import SYSTEM
from flowmetal.errors import StoreError
from flowmetal.store.base import Store
from flowmetal.store.postgres.deferred import DeferredTables
from flowmetal.store.postgres.journal import JournalTables
from flowmetal.store.postgres.retention import Retention
from flowmetal.store.postgres.runs import RunsTable
from flowmetal.store.postgres.schedules import ApiTables, ScheduleTables
from flowmetal.store.postgres.schema import MIGRATIONS
from flowmetal.store.sqlite.workers import WorkersTable

POOL_SIZE = 10  # FLOWMETAL_PG_POOL overrides
CHANNEL = "flowmetal"
WRITE_LOCK = 0x466C6F77  # the advisory lock key of transaction() ("Flow")
# The first half of a tree's lock key (two 32-bit keys: a space apart from WRITE_LOCK's), the
# second being hashtext(root id). Two trees whose ids hash alike only wait for each other.
TREE_LOCK = 0x54726565  # ("Tree")
LISTEN_SLICE = 0.05  # seconds between looks at the `event` while listening
MIGRATE_LOCK = 0x466C6F78
LOCK_TIMEOUT = 10.0  # seconds a statement waits for a lock (FLOWMETAL_PG_LOCK_TIMEOUT; 0: no limit)
STATEMENT_TIMEOUT = 300.0  # seconds one statement may take (FLOWMETAL_PG_STATEMENT_TIMEOUT; 0: no limit)


def _seconds(name, default):
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise StoreError(f"{name}={text!r}: expected a number of seconds (0: no limit)")
    return value


def timeouts():
    """(lock_timeout, statement_timeout) in seconds, from the environment or the defaults."""
    return (_seconds("FLOWMETAL_PG_LOCK_TIMEOUT", LOCK_TIMEOUT),
            _seconds("FLOWMETAL_PG_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT))


def is_url(path):
    return str(path).startswith(("postgresql://", "postgres://"))


def redact(url):
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}@{host}"


class _Row(tuple):
    """A row read by position or by column name (like sqlite3.Row), so `dict(row)` works."""

    def __new__(cls, values, index):
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self):
        return self._index.keys()


def _row_factory(cursor):
    desc = cursor.description
    index = {c.name: i for i, c in enumerate(desc)} if desc else {}
    return lambda values: _Row(values, index)


class Result:
    """A statement's rows (all fetched) and rowcount: valid after its connection went back to the pool."""

    def __init__(self, cur):
        self.rowcount = cur.rowcount
        self.rows = cur.fetchall() if cur.description else []

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows

    def __iter__(self):
        return iter(self.rows)


class PostgresStore(RunsTable, JournalTables, ScheduleTables, Retention, ApiTables, WorkersTable, DeferredTables,
                    Store):
    def __init__(self, url, *, clock=None, pool_size=None, readonly=False):
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self.path = redact(url)  # (messages name the database by it, never with a password)
        self.url = url
        self.readonly = readonly
        self.server_time = clock is None
        self.clock = clock or SYSTEM
        self._local = threading.local()
        self._listeners = []
        size = pool_size or int(os.environ.get("FLOWMETAL_PG_POOL") or POOL_SIZE)
        self.lock_timeout, self.statement_timeout = timeouts()
        options = (f"-c lock_timeout={int(self.lock_timeout * 1000)} "
                   f"-c statement_timeout={int(self.statement_timeout * 1000)}")
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10, options=options) as conn:
                self._migrate(conn)
        except psycopg.Error as e:
            raise StoreError(f"cannot open database {self.path}: {self._reason(e)}") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=size, open=True,
                                   kwargs={"autocommit": True, "options": options},
                                   configure=self._configure, name="flowmetal")

    @staticmethod
    def _configure(conn):
        conn.row_factory = _row_factory

    # --- schema ---------------------------------------------------------------

    def _migrate(self, conn):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))  # one migrator at a time
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '0') ON CONFLICT DO NOTHING")
            version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(f"database {self.path} has schema version {version}, newer than this Flowmetal "
                                 f"understands ({len(MIGRATIONS)}); upgrade Flowmetal")
            for i in range(version, len(MIGRATIONS)):
                conn.execute(MIGRATIONS[i])
                conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(i + 1),))

    def schema_version(self):
        return int(self.q("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # --- connections and transactions -------------------------------------------

    def now(self):
        """The time parameter of a statement: None means the server's statement_timestamp()."""
        return None if self.server_time else self.clock.now()

    @contextmanager
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside a transaction on this thread
            yield conn
            return
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self, tree=None, lock=True):
        if getattr(self._local, "conn", None) is not None:
            yield  # (nested: joins the outer one)
            return
        try:
            with self.pool.connection() as conn:
                self._local.conn = conn
                try:
                    with conn.transaction():
                        if lock and not self.readonly and tree is not None:
                            # one tree's transaction: the write lock shared, its tree's exclusive, so
                            # the ends of runs in different trees commit at once (TREE_LOCK space)
                            conn.execute("SELECT pg_advisory_xact_lock_shared(%s), pg_advisory_xact_lock(%s, hashtext(%s))",
                                         (WRITE_LOCK, TREE_LOCK, tree))
                        elif lock and not self.readonly:
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                        yield
                finally:
                    self._local.conn = None
        except self._psycopg.Error as e:
            raise self._error(e) from None

    def _error(self, e):
        return StoreError(f"database {self.path}: {self._reason(e)}")

    def _reason(self, e):
        """One line saying what went wrong; for a timeout, which one and how to change it."""
        errors = self._psycopg.errors
        if isinstance(e, errors.LockNotAvailable):
            return (f"a lock held by another session was not granted within {self.lock_timeout:g} s "
                    f"(lock_timeout; FLOWMETAL_PG_LOCK_TIMEOUT sets it)")
        if isinstance(e, errors.QueryCanceled) and "statement timeout" in str(e):
            return (f"a statement took longer than {self.statement_timeout:g} s "
                    f"(statement_timeout; FLOWMETAL_PG_STATEMENT_TIMEOUT sets it)")
        text = str(e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    def q(self, sql, params=None):
        """Execute one statement in psycopg's %s style (inside the current transaction, or alone)."""
        if isinstance(params, dict):  # (booleans live in integer columns, as in SQLite)
            params = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
        elif params is not None:
            params = [int(v) if isinstance(v, bool) else v for v in params]
        try:
            with self._conn() as conn:
                return Result(conn.execute(sql, params))
        except self._psycopg.Error as e:
            raise self._error(e) from None

    def x(self, sql, params=()):
        """Execute one statement written with `?` marks (the SQL shared with the SQLite store)."""
        return self.q(sql.replace("%", "%%").replace("?", "%s"), params)

    def write_notify(self, sql, params=None):
        """One statement that may make a run runnable, and its NOTIFY, in one transaction."""
        with self.transaction(lock=False):
            result = self.q(sql, params)
            if result.rowcount:
                self.q("SELECT pg_notify(%s, '')", (CHANNEL,))
        return result

    def close(self):
        for conn in self._listeners:
            conn.close()
        self._listeners = []
        self._local = threading.local()
        self.pool.close()

    # --- wake-ups -------------------------------------------------------------------

    def wait_for_change(self, timeout, event=None):
        """LISTEN on this thread's own autocommit connection; True at the first NOTIFY (or when
        `event` is set). A lost listening connection answers True (look again) and is reopened."""
        end = SYSTEM.monotonic() + timeout  # (real time, whatever the store's clock: this waits for other processes)
        try:
            listener = self._listener()
            while True:
                left = end - SYSTEM.monotonic()
                if event is not None and event.is_set():
                    return True
                if left <= 0:
                    return False
                step = min(left, LISTEN_SLICE) if event is not None else left
                if any(True for _ in listener.notifies(timeout=step, stop_after=1)):
                    for _ in listener.notifies(timeout=0):  # (drain what came with it)
                        pass
                    return True
        except self._psycopg.Error:
            self._drop_listener()
            SYSTEM.sleep(max(0.0, min(1.0, end - SYSTEM.monotonic())))  # (the server may be restarting)
            return True

    def _listener(self):
        listener = getattr(self._local, "listener", None)
        if listener is None:
            listener = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            listener.execute(f"LISTEN {CHANNEL}")
            self._local.listener = listener
            self._listeners.append(listener)
        return listener

    def _drop_listener(self):
        listener = getattr(self._local, "listener", None)
        self._local.listener = None
        if listener is not None:
            self._listeners.remove(listener)
            listener.close()
