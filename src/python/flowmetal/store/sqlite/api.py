"""The SQLite tables and queries of the HTTP API (`flowmetal serve`): bearer tokens,
idempotency keys of `POST /runs`, the runs listing with cursor pagination, and the
counts behind `/metrics`.

`SqliteStore` mixes `ApiTables` in; its one migration (`MIGRATION`) is an entry of
`flowmetal.store.sqlite.schema.MIGRATIONS`. Only a token's SHA-256 is stored, never the token.
"""

from flowmetal.store.base import RUN_STATES

MIGRATION = """
    CREATE TABLE IF NOT EXISTS api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        request TEXT NOT NULL,
        created_at REAL NOT NULL
    );
"""


class ApiTables:
    """Methods of SqliteStore for the server; `self.x` executes one statement."""

    # --- tokens ----------------------------------------------------------------

    def insert_token(self, row):
        """Insert a token row (id, name, scope, hash, created_at); False if the name is taken."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return self.x(f"INSERT OR IGNORE INTO api_tokens ({cols}) VALUES ({marks})",
                      tuple(row.values())).rowcount == 1

    def get_token(self, token_id):
        row = self.x("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        return dict(row) if row else None

    def list_tokens(self):
        return [dict(r) for r in self.x("SELECT id, name, scope, created_at, last_used_at FROM api_tokens "
                                        "ORDER BY name")]

    def delete_token(self, name):
        return self.x("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount == 1

    def touch_token(self, token_id, now):
        self.x("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (now, token_id))

    def count_tokens(self):
        return self.x("SELECT count(*) FROM api_tokens").fetchone()[0]

    # --- idempotency keys --------------------------------------------------------

    def idempotent_run(self, key):
        """The idempotency row of `key` (run_id, request), or None."""
        row = self.x("SELECT run_id, request FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def insert_idempotency_key(self, key, run_id, request, now):
        self.x("INSERT INTO idempotency_keys (key, run_id, request, created_at) VALUES (?, ?, ?, ?)",
               (key, run_id, request, now))

    # --- runs, a page at a time ------------------------------------------------------

    def runs_page(self, *, state=None, file=None, function=None, schedule=None, parent_id=None,
                  before_id=None, limit=50):
        """Runs newest first (by id, which is time-sortable), those with an id below
        `before_id` when given: the cursor of the previous page."""
        where, params = [], []
        for col, val in (("state", state), ("file", file), ("function", function), ("schedule", schedule),
                         ("parent_id", parent_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self.x(f"SELECT * FROM runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    # --- what /metrics counts -----------------------------------------------------------

    def run_state_counts(self):
        counts = dict.fromkeys(RUN_STATES, 0)
        for state, n in self.x("SELECT state, count(*) FROM runs GROUP BY state"):
            counts[state] = n
        return counts

    def effect_counts(self):
        """{(builtin, status): journal entries}; a scan of the journal table."""
        return {(b, s): n for b, s, n in self.x("SELECT builtin, status, count(*) FROM journal GROUP BY builtin, status")}

    def last_fire_lags(self):
        """{schedule: seconds from the newest started fire's due time (with jitter) to its recording}."""
        rows = self.x("""SELECT f.schedule, f.recorded_at - coalesce(f.start_at, f.nominal) FROM fires f
                         JOIN (SELECT schedule, max(nominal) AS nominal FROM fires WHERE action = 'started'
                               GROUP BY schedule) m ON m.schedule = f.schedule AND m.nominal = f.nominal""")
        return {name: max(0.0, lag) for name, lag in rows}
