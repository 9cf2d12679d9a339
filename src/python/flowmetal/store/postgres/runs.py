"""Runs, leases and pinned sources in the PostgreSQL store.

Each intent method is one conditional statement (store/base.py). Times: NOW is
the injected clock's time when there is one, else the server's
statement_timestamp(), the same value everywhere in one statement.
"""

from flowmetal.codec import content_hash
from flowmetal.store.base import ENDED, run_by_prefix
from flowmetal.store.postgres.schema import ENDED_SQL

NOW = "coalesce(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"
_RUNNING_OWNED = "id = %(id)s AND owner = %(owner)s AND state = 'running'"


class RunsTable:
    # --- rows -------------------------------------------------------------------

    def insert_run(self, run):
        cols = ", ".join(run)
        marks = ", ".join(f"%({k})s" for k in run)
        self.write_notify(f"INSERT INTO runs ({cols}) VALUES ({marks})", run)

    def get_run(self, run_id):
        row = self.q("SELECT * FROM runs WHERE id = %s", (run_id,)).fetchone()
        return dict(row) if row else None

    def find_run(self, prefix):
        rows = self.q("SELECT * FROM runs WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
                      (prefix, prefix + "\uffff")).fetchall()
        return run_by_prefix(rows, prefix)

    def list_runs(self, status=None, limit=50, parent_id=None, root_id=None):
        where, params = [], []
        for col, val in (("state", status), ("parent_id", parent_id), ("root_id", root_id)):
            if val is not None:
                where.append(f"{col} = %s")
                params.append(val)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return [dict(r) for r in self.q(f"SELECT * FROM runs {clause} ORDER BY id DESC LIMIT %s", (*params, limit))]

    def descendants(self, run_id):
        rows = self.q("""WITH RECURSIVE d(id) AS (
                           SELECT id FROM runs WHERE parent_id = %s
                           UNION ALL SELECT r.id FROM runs r JOIN d ON r.parent_id = d.id)
                         SELECT id FROM d""", (run_id,))
        return [r[0] for r in rows]

    def update_run(self, run_id, *, if_owner=None, **fields):
        """Set columns directly: for tests and tools only (the engine uses the intent methods)."""
        fields.setdefault("updated_at", self.clock.now())
        sets = ", ".join(f"{k} = %({k})s" for k in fields)
        sql = f"UPDATE runs SET {sets} WHERE id = %(_id)s"
        if if_owner is not None:
            sql += " AND owner = %(_owner)s"
        return self.write_notify(sql, {**fields, "_id": run_id, "_owner": if_owner}).rowcount == 1

    # --- a run's life -------------------------------------------------------------

    def claim(self, owner, lease_seconds, root_id=None, run_id=None):
        scope = ""
        if run_id is not None:
            scope = " AND id = %(run_id)s"
        elif root_id is not None:
            scope = " AND root_id = %(root_id)s"
        # The subquery walks runs_due (a run's due time: created, woken, or its lease expired) in due order and locks the first runnable row no
        # other claim holds (SKIP LOCKED): concurrent claims take different runs, none waits.
        row = self.q(
            f"""UPDATE runs SET state = 'running', owner = %(owner)s, lease_expires = {NOW} + %(lease)s,
                   started_at = coalesce(started_at, {NOW}), updated_at = {NOW}, executions = executions + 1
               WHERE id = (
                   SELECT id FROM runs
                   WHERE state IN ('pending', 'waiting', 'running')
                     AND (state = 'pending' OR (state = 'waiting' AND wake_at <= {NOW})
                          OR (state = 'running' AND lease_expires < {NOW})){scope}
                   ORDER BY (CASE state WHEN 'pending' THEN created_at WHEN 'waiting' THEN wake_at WHEN 'running' THEN lease_expires END) LIMIT 1
                   FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            {"owner": owner, "lease": float(lease_seconds), "now": self.now(), "run_id": run_id, "root_id": root_id},
        ).fetchone()
        return dict(row) if row else None

    def renew_leases(self, owner, lease_seconds):
        rows = self.q(f"""UPDATE runs SET lease_expires = {NOW} + %(lease)s
                          WHERE owner = %(owner)s AND state = 'running'
                          RETURNING id, cancel_requested, deadline""",
                      {"owner": owner, "lease": float(lease_seconds), "now": self.now()})
        return sorted(tuple(r) for r in rows)

    def release(self, run_id, owner):
        return self.write_notify(
            f"UPDATE runs SET owner = NULL, lease_expires = 0, updated_at = {NOW} WHERE {_RUNNING_OWNED}",
            {"now": self.now(), "id": run_id, "owner": owner}).rowcount == 1

    def suspend_run(self, run_id, owner, waiting_for, wake_at):
        sql = (f"""UPDATE runs SET state = 'waiting', owner = NULL, lease_expires = NULL, waiting_for = %(w)s,
                       wake_at = %(wake)s, updated_at = {NOW} WHERE {_RUNNING_OWNED}""")
        params = {"w": waiting_for, "wake": wake_at, "now": self.now(), "id": run_id, "owner": owner}
        # a timer: other workers may want to re-plan their next wake
        run = self.write_notify if wake_at is not None else self.q
        return run(sql, params).rowcount == 1

    def end_run(self, run_id, state, *, owner=None, result=None, error=None, continued_as=None):
        if state not in ENDED:
            raise ValueError(f"end_run: {state!r} is not an ended state")
        if owner is not None:
            where = _RUNNING_OWNED
        else:
            where = "id = %(id)s AND state IN ('pending', 'waiting')"
        cancel = ", cancel_requested = coalesce(cancel_requested, %(state)s)" \
            if owner is None and state in ("cancelled", "timed_out") else ""
        return self.write_notify(
            f"""UPDATE runs SET state = %(state)s, result = %(result)s, error = %(error)s,
                   continued_as = coalesce(%(cont)s, continued_as), ended_at = {NOW}, updated_at = {NOW},
                   owner = NULL, lease_expires = NULL, waiting_for = NULL, wake_at = NULL{cancel}
               WHERE {where}""",
            {"state": state, "result": result, "error": error, "cont": continued_as, "now": self.now(),
             "id": run_id, "owner": owner}).rowcount == 1

    def wake(self, run_id):
        return self.write_notify(
            f"UPDATE runs SET wake_at = {NOW}, updated_at = {NOW} WHERE id = %(id)s AND state = 'waiting'",
            {"now": self.now(), "id": run_id}).rowcount == 1

    def request_cancel(self, run_id, state="cancelled"):
        return self.write_notify(
            f"UPDATE runs SET cancel_requested = %(state)s, updated_at = {NOW} "
            f"WHERE id = %(id)s AND state NOT IN ({ENDED_SQL})",
            {"state": state, "now": self.now(), "id": run_id}).rowcount == 1

    # --- what runs there are --------------------------------------------------------

    def owned_runs(self, owner):
        return [tuple(r) for r in self.q(
            "SELECT id, cancel_requested, deadline FROM runs WHERE owner = %s AND state = 'running' ORDER BY id",
            (owner,))]

    def running_runs(self):
        return [dict(r) for r in self.q("SELECT id, owner, lease_expires FROM runs WHERE state = 'running'")]

    def next_wake(self, root_id=None):
        sql = "SELECT min(wake_at) FROM runs WHERE state = 'waiting' AND wake_at IS NOT NULL"
        if root_id is not None:
            return self.q(sql + " AND root_id = %s", (root_id,)).fetchone()[0]
        return self.q(sql).fetchone()[0]

    def has_pending(self, root_id=None):
        sql = "SELECT 1 FROM runs WHERE state IN ('pending', 'running')"
        if root_id is not None:
            return self.q(sql + " AND root_id = %s LIMIT 1", (root_id,)).fetchone() is not None
        return self.q(sql + " LIMIT 1").fetchone() is not None

    # --- pinned sources ---------------------------------------------------------------

    def pin_sources(self, run_id, texts):
        with self.transaction(lock=False):
            for name, text in texts.items():
                digest = content_hash(text)
                self.q("INSERT INTO sources (hash, content) VALUES (%s, %s) ON CONFLICT DO NOTHING", (digest, text))
                self.q("INSERT INTO run_sources (run_id, name, hash) VALUES (%s, %s, %s) "
                       "ON CONFLICT (run_id, name) DO UPDATE SET hash = excluded.hash", (run_id, name, digest))

    def copy_sources(self, from_run, to_run):
        self.q("INSERT INTO run_sources (run_id, name, hash) SELECT %s, name, hash FROM run_sources "
               "WHERE run_id = %s ON CONFLICT DO NOTHING", (to_run, from_run))

    def pinned_sources(self, run_id):
        rows = self.q("""SELECT rs.name, s.content FROM run_sources rs JOIN sources s ON s.hash = rs.hash
                         WHERE rs.run_id = %s""", (run_id,))
        return {r[0]: r[1] for r in rows}
