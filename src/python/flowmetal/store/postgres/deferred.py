"""The PostgreSQL table of deferred effects (as store/sqlite/deferred.py: one row per
deferred effect, completed by one conditional statement, so of two completions racing
exactly one wins). Task claims skip rows another claim holds (FOR UPDATE SKIP LOCKED);
leases, heartbeat caps and retry delays as there."""

from flowmetal.store.base import ENDED

ENDED_SQL = ", ".join(f"'{state}'" for state in ENDED)

MIGRATION = """
    CREATE TABLE deferred (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        builtin TEXT NOT NULL,
        queue TEXT,
        detail TEXT NOT NULL,
        deadline DOUBLE PRECISION,
        state TEXT NOT NULL,
        result TEXT,
        error TEXT,
        payload_hash TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        completed_at DOUBLE PRECISION,
        token_hash TEXT UNIQUE,
        lease_hash TEXT,
        lease_expires DOUBLE PRECISION,
        attempts BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX deferred_waiting ON deferred (state, queue, created_at);
"""

# Task leases (as store/sqlite/deferred.py TASK_MIGRATION).
TASK_MIGRATION = """
    ALTER TABLE deferred ADD COLUMN IF NOT EXISTS lost BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE deferred ADD COLUMN IF NOT EXISTS worker TEXT;
    ALTER TABLE deferred ADD COLUMN IF NOT EXISTS lease_seconds DOUBLE PRECISION;
"""

_LEASE = "LEAST(%s, COALESCE((detail::jsonb ->> 'heartbeat')::double precision, 1e18))"


def _queues(queue):
    return [queue] if isinstance(queue, str) else list(queue)


class DeferredTables:
    """Methods of PostgresStore for deferred effects; `self.q` executes one statement."""

    def insert_deferred(self, row):
        cols = ", ".join(row)
        marks = ", ".join("%s" for _ in row)
        self.q(f"INSERT INTO deferred ({cols}, state) VALUES ({marks}, 'waiting')", tuple(row.values()))

    def get_deferred(self, run_id, seq):
        row = self.q("SELECT * FROM deferred WHERE run_id = %s AND seq = %s", (run_id, seq)).fetchone()
        return dict(row) if row else None

    def deferred_by_token(self, token_hash):
        row = self.q("SELECT * FROM deferred WHERE token_hash = %s", (token_hash,)).fetchone()
        return dict(row) if row else None

    def complete_deferred(self, run_id, seq, result, error, payload_hash, now):
        return self.q(
            f"""UPDATE deferred SET state = 'completed', result = %s, error = %s, payload_hash = %s,
                       completed_at = %s
                WHERE run_id = %s AND seq = %s AND state = 'waiting' AND (deadline IS NULL OR deadline > %s)
                  AND (SELECT state FROM runs WHERE id = %s) NOT IN ({ENDED_SQL})""",
            (result, error, payload_hash, now, run_id, seq, now, run_id)).rowcount == 1

    def expire_deferred(self, run_id, seq, now):
        return self.q("UPDATE deferred SET state = 'expired', completed_at = %s "
                      "WHERE run_id = %s AND seq = %s AND state = 'waiting'", (now, run_id, seq)).rowcount == 1

    def claim_task(self, queue, lease_hash, lease_seconds, now, worker=None):
        row = self.q(
            f"""UPDATE deferred SET lease_hash = %s, lease_seconds = {_LEASE}, lease_expires = %s + {_LEASE},
                       attempts = attempts + 1, lost = lost + (CASE WHEN lease_hash IS NULL THEN 0 ELSE 1 END),
                       worker = %s
                WHERE (run_id, seq) = (
                    SELECT d.run_id, d.seq FROM deferred d JOIN runs r ON r.id = d.run_id
                    WHERE d.state = 'waiting' AND d.queue = ANY(%s) AND r.state NOT IN ({ENDED_SQL})
                      AND (d.lease_expires IS NULL OR d.lease_expires < %s)
                      AND (d.deadline IS NULL OR d.deadline > %s)
                    ORDER BY d.created_at LIMIT 1 FOR UPDATE OF d SKIP LOCKED)
                RETURNING *""",
            (lease_hash, lease_seconds, now, lease_seconds, worker, _queues(queue), now, now)).fetchone()
        return dict(row) if row else None

    def renew_task(self, run_id, seq, lease_hash, lease_seconds, now):
        return self.q(
            f"""UPDATE deferred SET lease_seconds = {_LEASE}, lease_expires = %s + {_LEASE}
                WHERE run_id = %s AND seq = %s AND state = 'waiting' AND lease_hash = %s AND lease_expires >= %s""",
            (lease_seconds, now, lease_seconds, run_id, seq, lease_hash, now)).rowcount == 1

    def retry_task(self, run_id, seq, lease_hash, offer_at, now):
        return self.q("UPDATE deferred SET lease_hash = NULL, lease_expires = %s, worker = NULL "
                      "WHERE run_id = %s AND seq = %s AND state = 'waiting' AND lease_hash = %s "
                      "AND lease_expires >= %s", (offer_at, run_id, seq, lease_hash, now)).rowcount == 1

    def waiting_deferred(self, queue=None, limit=100):
        sql, params = "SELECT * FROM deferred WHERE state = 'waiting'", []
        if queue is not None:
            sql += " AND queue = %s"
            params.append(queue)
        return [dict(r) for r in self.q(sql + " ORDER BY created_at LIMIT %s", (*params, limit))]

    def task_queues(self, now):
        return [dict(r) for r in self.q(
            f"""SELECT d.queue AS queue, COUNT(*) AS depth,
                       SUM(CASE WHEN d.lease_hash IS NOT NULL AND d.lease_expires >= %s THEN 1 ELSE 0 END) AS leased,
                       MIN(d.created_at) AS oldest
                FROM deferred d JOIN runs r ON r.id = d.run_id
                WHERE d.state = 'waiting' AND d.queue IS NOT NULL AND r.state NOT IN ({ENDED_SQL})
                GROUP BY d.queue ORDER BY d.queue""", (now,))]
