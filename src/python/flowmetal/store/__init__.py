"""Storage: one contract (`base.Store`), one implementation per database."""


def open_store(path, *, synchronous_full=False, busy_timeout=None, readonly=False, clock=None):
    """The store for a database path, or a PostgreSQL URL (postgresql://...). `busy_timeout` (seconds): how long to wait for a lock.
    `readonly`: never take the write lock (see store/sqlite/__init__.py)."""
    if str(path).startswith(("postgresql://", "postgres://")):  # (psycopg is imported only then)
        from flowmetal.store.postgres import PostgresStore

        return PostgresStore(str(path), clock=clock, readonly=readonly)
    from flowmetal.store.sqlite import SqliteStore

    ms = None if busy_timeout is None else int(busy_timeout * 1000)
    return SqliteStore(path, synchronous_full=synchronous_full, busy_timeout_ms=ms, readonly=readonly, clock=clock)


def private_dir(path):
    """Create the database's directory (0700, whatever the umask) if it does not exist."""
    from flowmetal.store.sqlite import private_dir as make

    return make(path)
