"""The SQLite table of deferred effects: results that come from outside the process.

A row per deferred effect (engine/deferred.py): the run and journal position of
the effect, what it waits for (`detail`, JSON; `queue` for a task), its
deadline, and its state: `waiting` until someone completes it (`completed`, with
the result or error, a hash of that payload, and when), or until the run gives
up on it at its deadline (`expired`). Completion is one conditional statement
(`state = 'waiting'`), so of two completions racing, exactly one wins.

A task (engine/tasks.py) is leased by a claim: `lease_hash`, `lease_expires`
(now + the lease, never more than the task's `heartbeat` interval, read from its
`detail`), `lease_seconds` (what a heartbeat extends it by), `worker` (who claimed
it), `attempts` + 1, and `lost` + 1 when the previous lease expired unfinished (a
re-execution). A retryable fail clears the lease and keeps the task from claims
until its retry delay has passed (`lease_expires` = when it is offered again).

`SqliteStore` mixes `DeferredTables` in; its migrations (`MIGRATION`,
`TASK_MIGRATION`) are entries of `flowmetal.store.sqlite.schema.MIGRATIONS`.
"""

from flowmetal.store.base import ENDED

ENDED_SQL = ", ".join(f"'{state}'" for state in ENDED)

MIGRATION = """
    CREATE TABLE IF NOT EXISTS deferred (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        builtin TEXT NOT NULL,
        queue TEXT,
        detail TEXT NOT NULL,
        deadline REAL,
        state TEXT NOT NULL,
        result TEXT,
        error TEXT,
        payload_hash TEXT,
        created_at REAL NOT NULL,
        completed_at REAL,
        token_hash TEXT,
        lease_hash TEXT,
        lease_expires REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, seq)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS deferred_token ON deferred(token_hash);
    CREATE INDEX IF NOT EXISTS deferred_waiting ON deferred(state, queue);
"""

# Task leases: who holds one and for how long a heartbeat extends it, and how many leases
# expired unfinished (the task was offered again: re-executed). The table is rebuilt rather
# than altered, so that the migration also holds over a table that has the columns already
# (a database taken back to an older schema version by hand: tests/test_store.py does).
_COLUMNS = ("run_id, seq, builtin, queue, detail, deadline, state, result, error, payload_hash, created_at, "
            "completed_at, token_hash, lease_hash, lease_expires, attempts")
TASK_MIGRATION = f"""
    CREATE TABLE deferred_v2 (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        builtin TEXT NOT NULL,
        queue TEXT,
        detail TEXT NOT NULL,
        deadline REAL,
        state TEXT NOT NULL,
        result TEXT,
        error TEXT,
        payload_hash TEXT,
        created_at REAL NOT NULL,
        completed_at REAL,
        token_hash TEXT,
        lease_hash TEXT,
        lease_expires REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lost INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_seconds REAL,
        PRIMARY KEY (run_id, seq)
    );
    INSERT INTO deferred_v2 ({_COLUMNS}) SELECT {_COLUMNS} FROM deferred;
    DROP TABLE deferred;
    ALTER TABLE deferred_v2 RENAME TO deferred;
    CREATE UNIQUE INDEX deferred_token ON deferred(token_hash);
    CREATE INDEX deferred_waiting ON deferred(state, queue);
"""

# The lease a claim or heartbeat gives: the asked seconds, capped by the task's heartbeat interval.
_LEASE = "MIN(?, COALESCE(json_extract(detail, '$.heartbeat'), 1e18))"


def _queues(queue):
    queues = [queue] if isinstance(queue, str) else list(queue)
    return queues, ", ".join("?" for _ in queues)


class DeferredTables:
    """Methods of SqliteStore for deferred effects; `self.x` executes one statement."""

    def insert_deferred(self, row):
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.x(f"INSERT INTO deferred ({cols}, state) VALUES ({marks}, 'waiting')", tuple(row.values()))

    def get_deferred(self, run_id, seq):
        row = self.x("SELECT * FROM deferred WHERE run_id = ? AND seq = ?", (run_id, seq)).fetchone()
        return dict(row) if row else None

    def deferred_by_token(self, token_hash):
        row = self.x("SELECT * FROM deferred WHERE token_hash = ?", (token_hash,)).fetchone()
        return dict(row) if row else None

    def complete_deferred(self, run_id, seq, result, error, payload_hash, now):
        return self.x(
            f"""UPDATE deferred SET state = 'completed', result = ?, error = ?, payload_hash = ?, completed_at = ?
                WHERE run_id = ? AND seq = ? AND state = 'waiting' AND (deadline IS NULL OR deadline > ?)
                  AND (SELECT state FROM runs WHERE id = ?) NOT IN ({ENDED_SQL})""",
            (result, error, payload_hash, now, run_id, seq, now, run_id)).rowcount == 1

    def expire_deferred(self, run_id, seq, now):
        return self.x("UPDATE deferred SET state = 'expired', completed_at = ? "
                      "WHERE run_id = ? AND seq = ? AND state = 'waiting'", (now, run_id, seq)).rowcount == 1

    def claim_task(self, queue, lease_hash, lease_seconds, now, worker=None):
        queues, marks = _queues(queue)
        row = self.x(
            f"""UPDATE deferred SET lease_hash = ?, lease_seconds = {_LEASE}, lease_expires = ? + {_LEASE},
                       attempts = attempts + 1, lost = lost + (CASE WHEN lease_hash IS NULL THEN 0 ELSE 1 END),
                       worker = ?
                WHERE rowid = (SELECT d.rowid FROM deferred d JOIN runs r ON r.id = d.run_id
                               WHERE d.state = 'waiting' AND d.queue IN ({marks}) AND r.state NOT IN ({ENDED_SQL})
                                 AND (d.lease_expires IS NULL OR d.lease_expires < ?)
                                 AND (d.deadline IS NULL OR d.deadline > ?)
                               ORDER BY d.created_at LIMIT 1)
                RETURNING *""",
            (lease_hash, lease_seconds, now, lease_seconds, worker, *queues, now, now)).fetchone()
        return dict(row) if row else None

    def renew_task(self, run_id, seq, lease_hash, lease_seconds, now):
        return self.x(
            f"""UPDATE deferred SET lease_seconds = {_LEASE}, lease_expires = ? + {_LEASE}
                WHERE run_id = ? AND seq = ? AND state = 'waiting' AND lease_hash = ? AND lease_expires >= ?""",
            (lease_seconds, now, lease_seconds, run_id, seq, lease_hash, now)).rowcount == 1

    def retry_task(self, run_id, seq, lease_hash, offer_at, now):
        """Give up the live lease held under `lease_hash`: the task is offered again from
        `offer_at` (its retry delay). False if the lease is stale or another's."""
        return self.x("UPDATE deferred SET lease_hash = NULL, lease_expires = ?, worker = NULL "
                      "WHERE run_id = ? AND seq = ? AND state = 'waiting' AND lease_hash = ? AND lease_expires >= ?",
                      (offer_at, run_id, seq, lease_hash, now)).rowcount == 1

    def waiting_deferred(self, queue=None, limit=100):
        sql, params = "SELECT * FROM deferred WHERE state = 'waiting'", []
        if queue is not None:
            sql += " AND queue = ?"
            params.append(queue)
        return [dict(r) for r in self.x(sql + " ORDER BY created_at LIMIT ?", (*params, limit))]

    def task_queues(self, now):
        return [dict(r) for r in self.x(
            f"""SELECT d.queue AS queue, COUNT(*) AS depth,
                       SUM(CASE WHEN d.lease_hash IS NOT NULL AND d.lease_expires >= ? THEN 1 ELSE 0 END) AS leased,
                       MIN(d.created_at) AS oldest
                FROM deferred d JOIN runs r ON r.id = d.run_id
                WHERE d.state = 'waiting' AND d.queue IS NOT NULL AND r.state NOT IN ({ENDED_SQL})
                GROUP BY d.queue ORDER BY d.queue""", (now,))]
