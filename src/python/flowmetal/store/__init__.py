"""Storage: one interface (`base.Store`), one implementation per database."""


def open_store(path, *, synchronous_full=False, busy_timeout=None):
    """The store for a database path. `busy_timeout` (seconds): how long to wait for a lock."""
    from flowmetal.store.sqlite import SqliteStore

    ms = None if busy_timeout is None else int(busy_timeout * 1000)
    return SqliteStore(path, synchronous_full=synchronous_full, busy_timeout_ms=ms)
