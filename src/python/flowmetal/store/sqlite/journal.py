"""The journal, logs, signals and blobs of the SQLite store."""

import sqlite3

from flowmetal.codec import content_hash
from flowmetal.errors import StoreError
from flowmetal.store.sqlite.schema import JOURNAL_COLUMNS, JOURNAL_KEY, journal_values


class _NotOwner(Exception):
    """A fenced batch wrote fewer rows than it had: roll it back."""


class JournalTables:
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
        params = (entry["seq"], *journal_values(entry), entry["run_id"], owner)
        conn = self.conn
        try:  # (what _exec does, without its frame)
            if self._local.depth:
                return conn.execute(self._INSERT_JOURNAL, params).rowcount == 1
            with self._write_lock:
                return conn.execute(self._INSERT_JOURNAL, params).rowcount == 1
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def insert_journal_many(self, entries, owner):
        """One executemany of the fenced INSERT inside one transaction: all rows or none."""
        if not entries:
            return True
        params = [(e["seq"], *journal_values(e), e["run_id"], owner) for e in entries]
        try:
            with self.transaction():
                try:
                    written = self.conn.executemany(self._INSERT_JOURNAL, params).rowcount
                except sqlite3.DatabaseError as e:
                    raise self._error(e) from None
                if written != len(params):
                    raise _NotOwner()  # (rolls back what was written, when the transaction is ours)
        except _NotOwner:
            return False
        return True

    def update_journal(self, run_id, seq, owner, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur = self.x(
            f"UPDATE journal SET {sets} WHERE key = "
            f"(SELECT num * {JOURNAL_KEY} + ? FROM runs WHERE id = ? AND owner = ? AND state = 'running')",
            (*fields.values(), seq, run_id, owner),
        )
        return cur.rowcount == 1

    def fork_journal(self, source_id, run_id, upto):
        """Copy entries 1..`upto` of `source_id`'s journal to the new run `run_id` (which has
        none) and record it as forked from `source_id` at `upto`. Call inside a transaction."""
        cols = [c for c in JOURNAL_COLUMNS if c not in ("run_id", "seq")]
        self.x(
            f"INSERT INTO journal (key, run_id, seq, {', '.join(cols)}, reexecuted) "
            f"SELECT (SELECT num FROM runs WHERE id = ?) * {JOURNAL_KEY} + j.seq, ?, j.seq, "
            f"{', '.join('j.' + c for c in cols)}, j.reexecuted FROM journal j WHERE j.key BETWEEN "
            f"(SELECT num * {JOURNAL_KEY} + 1 FROM runs WHERE id = ?) AND "
            f"(SELECT num * {JOURNAL_KEY} + ? FROM runs WHERE id = ?)",
            (run_id, run_id, source_id, upto, source_id))
        self.x("UPDATE runs SET forked_from = ?, forked_at = ? WHERE id = ?", (source_id, upto, run_id))

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
