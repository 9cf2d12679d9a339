"""The workers table: each worker process's identity (host, pid, start time) and when it was
last seen (its heartbeat), for `flowmetal workers`. Plain SQL with `?` marks, shared by the
PostgreSQL store (store/postgres/ inherits it). Its migration: MIGRATION."""

MIGRATION = """
    CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        stopped_at REAL
    );
"""


class WorkersTable:
    def worker_started(self, worker_id, host, pid, started_at):
        self.x("INSERT INTO workers (id, host, pid, started_at, seen_at) VALUES (?, ?, ?, ?, ?)",
               (worker_id, host, pid, started_at, started_at))

    def worker_seen(self, worker_id, now):
        return self.x("UPDATE workers SET seen_at = ? WHERE id = ? AND stopped_at IS NULL",
                      (now, worker_id)).rowcount == 1

    def worker_stopped(self, worker_id, now):
        return self.x("UPDATE workers SET stopped_at = ?, seen_at = ? WHERE id = ?", (now, now, worker_id)).rowcount == 1

    def workers(self, limit=100):
        """Newest first, with the number of running runs each holds."""
        return [dict(r) for r in self.x(
            """SELECT w.*, (SELECT count(*) FROM runs r WHERE r.owner = w.id AND r.state = 'running') AS runs
               FROM workers w ORDER BY w.started_at DESC LIMIT ?""", (limit,))]
