"""The scheduler's and the HTTP API's tables in the PostgreSQL store.

Their queries are the SQLite store's (plain SQL, `?` marks that `x` turns into
psycopg's); only the statements that SQLite spells `INSERT OR IGNORE` differ.
"""

from flowmetal.codec import content_hash
from flowmetal.store.sqlite.api import ApiTables as _SqliteApi
from flowmetal.store.sqlite.schedules import ScheduleTables as _SqliteSchedules


def _insert_ignore(store, table, row):
    cols = ", ".join(row)
    marks = ", ".join(f"%({k})s" for k in row)
    return store.q(f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", row).rowcount == 1


class ScheduleTables(_SqliteSchedules):
    def insert_schedule(self, row):
        return _insert_ignore(self, "schedules", row)

    def insert_fire(self, fire):
        return _insert_ignore(self, "fires", fire)

    def put_sources(self, texts):
        hashes = {}
        for name, text in texts.items():
            hashes[name] = digest = content_hash(text)
            self.q("INSERT INTO sources (hash, content) VALUES (%s, %s) ON CONFLICT DO NOTHING", (digest, text))
        return hashes


class ApiTables(_SqliteApi):
    def insert_token(self, row):
        return _insert_ignore(self, "api_tokens", row)
