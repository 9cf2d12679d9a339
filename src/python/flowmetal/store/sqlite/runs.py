"""Runs, leases and pinned sources in the SQLite store.

Each intent method is one conditional statement: it checks the owner or state
it expects and writes in the same statement, so nothing can come between the
check and the write (see the contract in store/base.py). Times are stamped with
the store's clock.
"""

from flowmetal.codec import content_hash
from flowmetal.store.base import ENDED, run_by_prefix
from flowmetal.store.sqlite.schema import CLAIM_DUE, CLAIMABLE, ENDED_SQL

_RUNNING_OWNED = "id = ? AND owner = ? AND state = 'running'"


def claim_sql(scope="", index="runs_due"):
    """The claim: (owner, lease expiry, now, now, now, now, *scope's parameters). Its inner
    SELECT is one search of `index` (runs_due; runs_due_root scoped by root_id; None: by id)
    up to `now`, in due order; tests/test_perf_claims.py checks the plan. INDEXED BY, because
    without ANALYZE statistics (a store never runs it) SQLite prefers runs_state for the
    `state IN` term and then sorts every claimable run."""
    indexed = f" INDEXED BY {index}" if index else ""
    return f"""UPDATE runs SET state = 'running', owner = ?, lease_expires = ?,
                   started_at = coalesce(started_at, ?), updated_at = ?, executions = executions + 1
               WHERE id = (
                   SELECT id FROM runs{indexed}
                   WHERE {CLAIMABLE} AND {CLAIM_DUE} <= ?
                     AND NOT (state = 'running' AND lease_expires >= ?){scope}
                   ORDER BY {CLAIM_DUE} LIMIT 1)
               RETURNING *"""


class RunsTable:
    # --- rows -------------------------------------------------------------------

    def insert_run(self, run):
        cols = ", ".join(run)
        marks = ", ".join("?" for _ in run)
        # num: the run's number in journal keys, never reused (runs are not deleted).
        self.x(f"INSERT INTO runs ({cols}, num) VALUES ({marks}, (SELECT coalesce(max(num), 0) + 1 FROM runs))",
               tuple(run.values()))

    def get_run(self, run_id):
        row = self.x("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def find_run(self, prefix):
        rows = self.x("SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                      (prefix, prefix + "\uffff")).fetchall()
        return run_by_prefix(rows, prefix)

    def list_runs(self, status=None, limit=50, parent_id=None, root_id=None):
        where, params = [], []
        for col, val in (("state", status), ("parent_id", parent_id), ("root_id", root_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self.x(f"SELECT * FROM runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [dict(r) for r in rows]

    def descendants(self, run_id):
        rows = self.x("""WITH RECURSIVE d(id) AS (
                           SELECT id FROM runs WHERE parent_id = ?
                           UNION ALL SELECT r.id FROM runs r JOIN d ON r.parent_id = d.id)
                         SELECT id FROM d""", (run_id,)).fetchall()
        return [r[0] for r in rows]

    def update_run(self, run_id, *, if_owner=None, **fields):
        """Set columns directly: for tests and tools only (the engine uses the intent methods)."""
        fields.setdefault("updated_at", self.clock.now())
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE runs SET {sets} WHERE id = ?"
        params = [*fields.values(), run_id]
        if if_owner is not None:
            sql += " AND owner = ?"
            params.append(if_owner)
        return self.x(sql, params).rowcount == 1

    # --- a run's life -------------------------------------------------------------

    def claim(self, owner, lease_seconds, root_id=None, run_id=None):
        """One search of the due index (migration 7), in due order: pending by creation,
        waiting by wake time, running (a dead owner's) by lease expiry; never a sort."""
        now = self.clock.now()
        scope, params, index = "", [now, now], "runs_due"
        if run_id is not None:
            scope, params, index = " AND id = ?", params + [run_id], None  # (the primary key)
        elif root_id is not None:
            scope, params, index = " AND root_id = ?", params + [root_id], "runs_due_root"
        row = self.x(claim_sql(scope, index), (owner, now + lease_seconds, now, now, *params)).fetchone()
        return dict(row) if row else None

    def renew_leases(self, owner, lease_seconds):
        with self.transaction():
            self.x("UPDATE runs SET lease_expires = ? WHERE owner = ? AND state = 'running'",
                   (self.clock.now() + lease_seconds, owner))
            rows = self.x("SELECT id, cancel_requested, deadline FROM runs WHERE owner = ? AND state = 'running'",
                          (owner,)).fetchall()
        return [tuple(r) for r in rows]

    def release(self, run_id, owner):
        return self.x(f"UPDATE runs SET owner = NULL, lease_expires = 0, updated_at = ? WHERE {_RUNNING_OWNED}",
                      (self.clock.now(), run_id, owner)).rowcount == 1

    def suspend_run(self, run_id, owner, waiting_for, wake_at):
        return self.x(
            f"""UPDATE runs SET state = 'waiting', owner = NULL, lease_expires = NULL, waiting_for = ?,
                   wake_at = ?, updated_at = ? WHERE {_RUNNING_OWNED}""",
            (waiting_for, wake_at, self.clock.now(), run_id, owner)).rowcount == 1

    def end_run(self, run_id, state, *, owner=None, result=None, error=None, continued_as=None):
        if state not in ENDED:
            raise ValueError(f"end_run: {state!r} is not an ended state")
        now = self.clock.now()
        if owner is not None:
            where, params = _RUNNING_OWNED, (run_id, owner)
        else:
            where, params = "id = ? AND state IN ('pending', 'waiting')", (run_id,)
        # a run cancelled from outside also records the request (as a running one does)
        cancel = ", cancel_requested = coalesce(cancel_requested, ?)" \
            if owner is None and state in ("cancelled", "timed_out") else ""
        return self.x(
            f"""UPDATE runs SET state = ?, result = ?, error = ?, continued_as = coalesce(?, continued_as),
                   ended_at = ?, updated_at = ?, owner = NULL, lease_expires = NULL, waiting_for = NULL,
                   wake_at = NULL{cancel} WHERE {where}""",
            (state, result, error, continued_as, now, now, *((state,) if cancel else ()), *params)).rowcount == 1

    def wake(self, run_id):
        now = self.clock.now()
        return self.x("UPDATE runs SET wake_at = ?, updated_at = ? WHERE id = ? AND state = 'waiting'",
                      (now, now, run_id)).rowcount == 1

    def request_cancel(self, run_id, state="cancelled"):
        return self.x(f"UPDATE runs SET cancel_requested = ?, updated_at = ? "
                      f"WHERE id = ? AND state NOT IN ({ENDED_SQL})",
                      (state, self.clock.now(), run_id)).rowcount == 1

    # --- what runs there are --------------------------------------------------------

    def owned_runs(self, owner):
        return [tuple(r) for r in self.x(
            "SELECT id, cancel_requested, deadline FROM runs WHERE owner = ? AND state = 'running'", (owner,))]

    def running_runs(self):
        return [dict(r) for r in self.x("SELECT id, owner, lease_expires FROM runs WHERE state = 'running'")]

    def next_wake(self, root_id=None):
        sql = "SELECT min(wake_at) FROM runs WHERE state = 'waiting' AND wake_at IS NOT NULL"
        params = ()
        if root_id is not None:
            sql += " AND root_id = ?"
            params = (root_id,)
        return self.x(sql, params).fetchone()[0]

    def has_pending(self, root_id=None):
        sql = "SELECT 1 FROM runs WHERE state IN ('pending', 'running')"
        params = ()
        if root_id is not None:
            sql += " AND root_id = ?"
            params = (root_id,)
        return self.x(sql + " LIMIT 1", params).fetchone() is not None

    # --- pinned sources ---------------------------------------------------------------

    def pin_sources(self, run_id, texts):
        for name, text in texts.items():
            digest = content_hash(text)
            self.x("INSERT OR IGNORE INTO sources (hash, content) VALUES (?, ?)", (digest, text))
            self.x("INSERT OR REPLACE INTO run_sources (run_id, name, hash) VALUES (?, ?, ?)", (run_id, name, digest))

    def copy_sources(self, from_run, to_run):
        self.x("INSERT OR IGNORE INTO run_sources (run_id, name, hash) SELECT ?, name, hash FROM run_sources "
               "WHERE run_id = ?", (to_run, from_run))

    def pinned_sources(self, run_id):
        rows = self.x("""SELECT rs.name, s.content FROM run_sources rs JOIN sources s ON s.hash = rs.hash
                         WHERE rs.run_id = ?""", (run_id,)).fetchall()
        return {r[0]: r[1] for r in rows}
