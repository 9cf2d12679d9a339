"""The scheduler's tables in the SQLite store: schedules, fires, and source texts by hash."""

from flowmetal.codec import content_hash
from flowmetal.errors import StoreError
from flowmetal.store.sqlite.schema import ENDED_SQL


class ScheduleTables:
    # --- schedules and fires (the scheduler's state) -------------------------

    def schedules(self):
        return [dict(r) for r in self.x("SELECT * FROM schedules ORDER BY name")]

    def get_schedule(self, name):
        row = self.x("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def insert_schedule(self, row):
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return self.x(f"INSERT OR IGNORE INTO schedules ({cols}) VALUES ({marks})", tuple(row.values())).rowcount == 1

    def update_schedule(self, name, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        return self.x(f"UPDATE schedules SET {sets} WHERE name = ?", (*fields.values(), name)).rowcount == 1

    def insert_fire(self, fire):
        cols = ", ".join(fire)
        marks = ", ".join("?" for _ in fire)
        return self.x(f"INSERT OR IGNORE INTO fires ({cols}) VALUES ({marks})", tuple(fire.values())).rowcount == 1

    def update_fire(self, schedule, nominal, only_open=False, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE fires SET {sets} WHERE schedule = ? AND nominal = ?"
        if only_open:
            sql += " AND run_state IS NULL"
        return self.x(sql, (*fields.values(), schedule, nominal)).rowcount == 1

    def fires(self, schedule, limit=100, action=None):
        sql, params = "SELECT * FROM fires WHERE schedule = ?", [schedule]
        if action is not None:
            sql += " AND action = ?"
            params.append(action)
        rows = self.x(sql + " ORDER BY nominal DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    def buffered_fires(self, schedule):
        return [dict(r) for r in self.x(
            "SELECT * FROM fires WHERE schedule = ? AND action = 'buffered' ORDER BY nominal", (schedule,))]

    def schedules_with_buffered(self):
        return [r[0] for r in self.x("SELECT DISTINCT schedule FROM fires WHERE action = 'buffered'")]

    def ended_fires(self, limit=1000):
        return [dict(r) for r in self.x(
            f"""SELECT f.schedule, f.nominal, f.run_id, r.state, r.error, r.continued_as, r.started_at, r.ended_at
               FROM fires f JOIN runs r ON r.id = f.run_id
               WHERE f.action = 'started' AND f.run_state IS NULL
                 AND r.state IN ({ENDED_SQL})
               LIMIT ?""", (limit,))]

    def active_schedule_runs(self, schedule):
        return [dict(r) for r in self.x(
            "SELECT id, state, cancel_requested FROM runs WHERE schedule = ? AND state IN ('pending', 'running', "
            "'waiting') ORDER BY id", (schedule,))]

    def fire_counts(self):
        out = {}
        for name, action, n in self.x("SELECT schedule, action, count(*) FROM fires GROUP BY schedule, action"):
            out.setdefault(name, {})[action] = n
        return out

    def put_sources(self, texts):
        hashes = {}
        for name, text in texts.items():
            digest = content_hash(text)
            self.x("INSERT OR IGNORE INTO sources (hash, content) VALUES (?, ?)", (digest, text))
            hashes[name] = digest
        return hashes

    def get_sources(self, hashes):
        out = {}
        for name, digest in hashes.items():
            row = self.x("SELECT content FROM sources WHERE hash = ?", (digest,)).fetchone()
            if row is None:
                raise StoreError(f"source {name} ({digest}) is missing from {self.path}")
            out[name] = row[0]
        return out
