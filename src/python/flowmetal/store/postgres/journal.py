"""The journal, logs, signals and blobs of the PostgreSQL store."""

from flowmetal.codec import content_hash
from flowmetal.errors import StoreError
from flowmetal.store.postgres.schema import ENDED_SQL  # noqa: F401 (one place for the ended states)
from flowmetal.store.sqlite.schema import JOURNAL_COLUMNS, journal_values

# One statement both fences (only the owner of a running run writes) and inserts.
_INSERT_JOURNAL = (
    f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) "
    f"SELECT {', '.join('%s' for _ in JOURNAL_COLUMNS)} "
    f"FROM runs WHERE id = %s AND owner = %s AND state = 'running'"
)


class _NotOwner(Exception):
    """A fenced batch wrote fewer rows than it had: roll it back."""


class JournalTables:
    # --- journal -------------------------------------------------------------

    def journal(self, run_id):
        return [dict(r) for r in self.q(
            f"SELECT {', '.join(JOURNAL_COLUMNS)}, reexecuted FROM journal WHERE run_id = %s ORDER BY seq",
            (run_id,))]

    def insert_journal(self, entry, owner):
        """The hot path of every effect: one statement, fenced by the owner, committed alone."""
        return self.q(_INSERT_JOURNAL, (*journal_values(entry), entry["run_id"], owner)).rowcount == 1

    def insert_journal_many(self, entries, owner):
        """The fenced INSERT of each entry inside one transaction: all rows or none."""
        if not entries:
            return True
        try:
            with self.transaction():
                for e in entries:
                    if self.q(_INSERT_JOURNAL, (*journal_values(e), e["run_id"], owner)).rowcount != 1:
                        raise _NotOwner()  # (rolls back what was written, when the transaction is ours)
        except _NotOwner:
            return False
        return True

    def fork_journal(self, source_id, run_id, upto):
        """Copy entries 1..`upto` of `source_id`'s journal to the new run `run_id` and record it
        as forked from `source_id` at `upto` (engine/fork.py). Call inside a transaction."""
        cols = ("builtin", "args", "digest", "status", "result", "error", "data", "started_at", "ended_at",
                "reexecuted")
        self.q(f"INSERT INTO journal (run_id, seq, {', '.join(cols)}) SELECT %s, seq, {', '.join(cols)} "
               f"FROM journal WHERE run_id = %s AND seq BETWEEN 1 AND %s", (run_id, source_id, upto))
        self.q("UPDATE runs SET forked_from = %s, forked_at = %s WHERE id = %s", (source_id, upto, run_id))

    def update_journal(self, run_id, seq, owner, **fields):
        sets = ", ".join(f"{k} = %s" for k in fields)
        return self.q(
            f"UPDATE journal SET {sets} WHERE run_id = %s AND seq = %s AND EXISTS "
            f"(SELECT 1 FROM runs WHERE id = %s AND owner = %s AND state = 'running')",
            (*fields.values(), run_id, seq, run_id, owner)).rowcount == 1

    # --- logs ----------------------------------------------------------------

    def add_logs(self, run_id, rows):
        if not rows:
            return
        with self.transaction(lock=False):
            for r in rows:
                self.q("INSERT INTO logs (run_id, seq, n, time, stream, line) VALUES (%s, %s, %s, %s, %s, %s) "
                       "ON CONFLICT DO NOTHING", (run_id, *r))

    def logs(self, run_id, after_rowid=0):
        return [dict(r) for r in self.q(
            "SELECT rowid, seq, n, time, stream, line FROM logs WHERE run_id = %s AND rowid > %s ORDER BY rowid",
            (run_id, after_rowid))]

    def max_log_rowid(self):
        return self.q("SELECT coalesce(max(rowid), 0) FROM logs").fetchone()[0]

    def tree_logs(self, root_id, after_rowid=0):
        return [dict(r) for r in self.q(
            """SELECT l.rowid, l.run_id, l.seq, l.n, l.time, l.stream, l.line FROM logs l
               JOIN runs r ON r.id = l.run_id WHERE r.root_id = %s AND l.rowid > %s ORDER BY l.rowid""",
            (root_id, after_rowid))]

    # --- signals -------------------------------------------------------------

    def insert_signal(self, run_id, name, payload, now):
        self.write_notify("INSERT INTO signals (run_id, name, payload, sent_at) VALUES (%s, %s, %s, %s)",
                          (run_id, name, payload, now))

    def take_signal(self, run_id, name, seq):
        row = self.q("""UPDATE signals SET consumed_seq = %s WHERE id = (
                            SELECT id FROM signals WHERE run_id = %s AND name = %s AND consumed_seq IS NULL
                            ORDER BY id LIMIT 1 FOR UPDATE)
                        RETURNING id, payload""", (seq, run_id, name)).fetchone()
        return dict(row) if row else None

    def has_signal(self, run_id, name):
        return self.q("SELECT 1 FROM signals WHERE run_id = %s AND name = %s AND consumed_seq IS NULL LIMIT 1",
                      (run_id, name)).fetchone() is not None

    def signals(self, run_id):
        return [dict(r) for r in self.q("SELECT * FROM signals WHERE run_id = %s ORDER BY id", (run_id,))]

    # --- blobs ---------------------------------------------------------------

    def put_blob(self, data, now):
        digest = content_hash(data)
        self.q("INSERT INTO blobs (hash, data, touched_at) VALUES (%s, %s, %s) "
               "ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at", (digest, data, now))
        return digest

    def get_blob(self, digest):
        row = self.q("SELECT data FROM blobs WHERE hash = %s", (digest,)).fetchone()
        if row is None:
            raise StoreError(f"blob {digest} is missing from {self.path}")
        return row[0]
