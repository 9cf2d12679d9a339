"""`flowmetal db copy SRC DST`: every table of one store into another (SQLite or PostgreSQL,
either way), so a workload moves between databases with its history and its runs in flight.

Both stores are opened (and so migrated) to the current schema first. The rows go table
by table in batches, in one transaction on the destination; then the row counts of the
two are compared, and a difference is an error. A destination that already holds runs,
schedules or fires is refused unless `force` (its rows are then kept and merged, a row
whose key exists there is an error). Columns that only one store has are left to the
destination: SQLite's journal `key` is derived from the run's `num`, PostgreSQL's log
`rowid` is assigned in the source's order. Runs keep their state, owner and lease: a
run that was running on the source is taken over on the destination when its lease expires.
"""

from flowmetal.errors import UserError

BATCH = 1000
# parents before children; each: (table, ORDER BY of the source read)
TABLES = [("runs", "num"), ("sources", "hash"), ("run_sources", "run_id, name"), ("journal", "run_id, seq"),
          ("logs", "run_id, seq, n"), ("signals", "id"), ("blobs", "hash"), ("schedules", "name"),
          ("fires", "schedule, nominal"), ("api_tokens", "id"), ("idempotency_keys", "key"), ("workers", "id")]
CHECK_EMPTY = ("runs", "schedules", "fires")


def _is_postgres(store):
    return type(store).__name__ == "PostgresStore"


def _columns(store, table):
    if _is_postgres(store):
        rows = store.x("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                       "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows]
    return [r[1] for r in store.x(f"PRAGMA table_info({table})")]


def count(store, table):
    return store.x(f"SELECT count(*) FROM {table}").fetchone()[0]


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
        for table, order in TABLES:
            cols = [c for c in _columns(src, table) if c in set(_columns(dst, table)) and c != "rowid"]
            if table == "journal" and not _is_postgres(dst):
                copied[table] = _copy_rows(src, dst, table, order, cols, journal_key=True)
            else:
                copied[table] = _copy_rows(src, dst, table, order, cols)
            if progress:
                progress(table, copied[table])
        if _is_postgres(dst):  # (sequences continue after the copied numbers)
            dst.x("SELECT setval('runs_num_seq', coalesce((SELECT max(num) FROM runs), 0) + 1, false)")
            dst.x("SELECT setval(pg_get_serial_sequence('signals', 'id'), "
                  "coalesce((SELECT max(id) FROM signals), 0) + 1, false)")
    for table, _ in TABLES:
        want, got = before[table] + count(src, table), count(dst, table)
        if want != got:
            raise UserError(f"copy check failed: {table} has {got} rows on the destination, expected {want}")
    return copied


def _copy_rows(src, dst, table, order, cols, journal_key=False):
    names = ", ".join(cols)
    marks = ", ".join("?" for _ in cols)
    if journal_key:  # SQLite: key = runs.num * 2**32 + seq (store/sqlite/schema.py)
        from flowmetal.store.sqlite.schema import JOURNAL_KEY

        sql = (f"INSERT INTO journal (key, {names}) SELECT num * {JOURNAL_KEY} + ?, {marks} "
               f"FROM runs WHERE id = ?")
    else:
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
    n, offset = 0, 0
    while True:
        rows = src.x(f"SELECT {names} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", (BATCH, offset)).fetchall()
        for row in rows:
            values = tuple(row)
            if journal_key:
                values = (row["seq"], *values, row["run_id"])
            dst.x(sql, values)
        n += len(rows)
        offset += BATCH
        if len(rows) < BATCH:
            return n
