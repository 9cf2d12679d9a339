"""Storage: one interface (`base.Store`), one implementation per database."""


def open_store(path, *, synchronous_full=False):
    from flowmetal.store.sqlite import SqliteStore

    return SqliteStore(path, synchronous_full=synchronous_full)
