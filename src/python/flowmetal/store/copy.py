"""`flowmetal db copy SRC DST`: every table of one store into another (SQLite or PostgreSQL,
either way), so a workload moves between databases with its history and its runs in flight.

Both stores are opened (and so migrated) to the current schema first. The source is read
in one snapshot (`reading`), each table as one stream of rows; the destination is written
in one transaction, in bulk: on SQLite with sqlite-utils' `insert_all` (multi-row INSERTs),
on PostgreSQL with `COPY ... FROM STDIN`. sqlite-utils is imported here, when a copy or an
export runs, never by the store itself (its import costs every command about 0.2 s).

Then, still in the destination's transaction, the row counts of the two are compared: a
difference (a writer still busy on the source) is an error and the destination is left
as it was. A destination that already holds runs, schedules or fires is refused unless
`force` (its rows are then kept and merged, a row whose key exists there is an error).
Columns that only one store has are left to the destination: SQLite's journal `key` is
derived from the run's `num`, PostgreSQL's log `rowid` is assigned in the source's order.
Runs keep their state, owner and lease: a run that was running on the source is taken
over on the destination when its lease expires.
"""

import sqlite3
from contextlib import contextmanager

from flowmetal.errors import StoreError, UserError

BATCH = 1000
# parents before children; each: (table, ORDER BY of the source read)
TABLES = [("runs", "num"), ("sources", "hash"), ("run_sources", "run_id, name"), ("journal", "run_id, seq"),
          ("logs", "rowid"), ("signals", "id"), ("blobs", "hash"), ("schedules", "name"),
          ("fires", "schedule, nominal"), ("api_tokens", "id"), ("idempotency_keys", "key"), ("workers", "id")]
CHECK_EMPTY = ("runs", "schedules", "fires")
DERIVED = {"journal": {"key"}, "logs": {"rowid"}}  # columns one store computes itself


def is_postgres(store):
    return type(store).__name__ == "PostgresStore"


def columns(store, table):
    """The table's columns in the store's order (derived ones included)."""
    if is_postgres(store):
        rows = store.x("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                       "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows]
    return [r[1] for r in store.x(f"PRAGMA table_info({table})")]


def count(store, table):
    return store.x(f"SELECT count(*) FROM {table}").fetchone()[0]


def sqlite_db(store):
    """sqlite-utils' Database on the store's own connection of this thread (so it joins the
    store's transaction: sqlite-utils nests its writes in savepoints then)."""
    import sqlite_utils  # (lazily: only db copy and db export pay for it)

    return sqlite_utils.Database(store.conn, execute_plugins=False)


@contextmanager
def reading(store):
    """One consistent snapshot of `store`; yields rows(table, cols, order) -> iterator of dicts,
    streamed (a table never has to fit in memory)."""
    if is_postgres(store):
        from psycopg.rows import dict_row

        with store.pool.connection() as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    names = iter(range(1 << 30))

                    def rows(table, cols, order):
                        with conn.cursor(name=f"flowmetal_read_{next(names)}", row_factory=dict_row) as cur:
                            cur.itersize = BATCH
                            cur.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
                            yield from cur
                    yield rows
            except store._psycopg.Error as e:
                raise store._error(e) from None
        return
    db = sqlite_db(store)
    conn = store.conn
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")  # (deferred: a read snapshot from the first read on, no write lock)
    try:
        yield lambda table, cols, order: db.query(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
    except sqlite3.DatabaseError as e:
        raise store._error(e) from None
    finally:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")  # (nothing was written)


def copy_store(src, dst, force=False, progress=None):
    """Copy every table of `src` into `dst`; returns {table: rows copied}."""
    if not force:
        busy = [t for t in CHECK_EMPTY if count(dst, t)]
        if busy:
            raise UserError(f"the destination is not empty ({', '.join(busy)} hold rows); "
                            f"copy into an empty database, or pass --force to merge")
    before = {t: count(dst, t) for t, _ in TABLES}
    copied = {}
    with dst.transaction():
        with reading(src) as rows:
            for table, order in TABLES:
                skip = DERIVED.get(table, set())
                dst_cols = set(columns(dst, table))
                cols = [c for c in columns(src, table) if c in dst_cols and c not in skip]
                source = rows(table, cols, order)
                if is_postgres(dst):
                    copied[table] = _copy_into_postgres(dst, table, cols, source)
                else:
                    if table == "journal":
                        source = _with_journal_key(dst, source)
                    copied[table] = _insert_into_sqlite(dst, table, source)
                if progress:
                    progress(table, copied[table])
        if is_postgres(dst):  # (sequences continue after the copied numbers)
            dst.x("SELECT setval('runs_num_seq', coalesce((SELECT max(num) FROM runs), 0) + 1, false)")
            dst.x("SELECT setval(pg_get_serial_sequence('signals', 'id'), "
                  "coalesce((SELECT max(id) FROM signals), 0) + 1, false)")
        # the source as it is now (after the snapshot), still inside the destination's
        # transaction: a writer busy on the source is seen, and the destination stays as it was
        for table, _ in TABLES:
            want, got = before[table] + count(src, table), count(dst, table)
            if want != got:
                raise UserError(f"copy check failed: {table} has {got} rows on the destination, expected {want} "
                                f"(is a worker or scheduler still writing to the source?); nothing was copied")
    return copied


class _Counted:
    def __init__(self, rows):
        self.rows, self.n = rows, 0

    def __iter__(self):
        for row in self.rows:
            self.n += 1
            yield row


def _insert_into_sqlite(dst, table, rows):
    counted = _Counted(rows)
    try:
        sqlite_db(dst)[table].insert_all(counted, batch_size=BATCH)
    except sqlite3.IntegrityError as e:
        raise UserError(f"cannot copy into {table}: a row with the same key is already there ({e})") from None
    except sqlite3.DatabaseError as e:
        raise dst._error(e) from None
    return counted.n


def _with_journal_key(dst, rows):
    """SQLite's journal key = runs.num * 2**32 + seq (store/sqlite/schema.py), from the
    destination's runs (copied first)."""
    from flowmetal.store.sqlite.schema import JOURNAL_KEY

    nums = dict(dst.x("SELECT id, num FROM runs").fetchall())
    for row in rows:
        num = nums.get(row["run_id"])
        if num is None:
            raise StoreError(f"journal entry {row['run_id']}#{row['seq']} belongs to no run")
        yield {"key": num * JOURNAL_KEY + row["seq"], **row}


def _copy_into_postgres(dst, table, cols, rows):
    n = 0
    try:
        with dst._conn() as conn:  # (the transaction's connection)
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as out:
                for row in rows:
                    out.write_row([row[c] for c in cols])
                    n += 1
    except dst._psycopg.errors.UniqueViolation as e:
        raise UserError(f"cannot copy into {table}: a row with the same key is already there "
                        f"({str(e).strip().splitlines()[-1]})") from None
    except dst._psycopg.Error as e:
        raise dst._error(e) from None
    return n
