"""Claims in O(log n) (issue 17 item 2): a claim is one search of the due index, never a sort
of every claimable run, and migration 9 makes the runs of an older database claimable through it."""

import sqlite3

from flowmetal.model import WaitingFor
from flowmetal.store.sqlite import MIGRATIONS, SqliteStore
from flowmetal.store.sqlite.runs import claim_sql

# The schema version just before the due indexes (the migration that creates them runs next).
DUE_MIGRATION = next(i for i, m in enumerate(MIGRATIONS) if isinstance(m, str) and "CREATE INDEX runs_due " in m)


def add_run(store, run_id, created_at, state="pending", root_id=None, **extra):
    store.insert_run({"id": run_id, "file": "w.star", "function": "main", "args": "{}", "state": state,
                      "created_at": created_at, "root_id": root_id or run_id, **extra})


def plan(store, sql, params):
    return [row[3] for row in store.x("EXPLAIN QUERY PLAN " + sql, params).fetchall()]


def test_the_claim_searches_the_due_index_and_sorts_nothing(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    with store.transaction():  # a backlog of every kind, so the planner has a real choice
        for i in range(3000):
            state = ("pending", "waiting", "running", "completed")[i % 4]
            add_run(store, f"r{i:05}", 1000.0 + i, state, root_id=f"t{i % 7}",
                    wake_at=2000.0 + i if state == "waiting" else None,
                    lease_expires=3000.0 + i if state == "running" else None)
    for analyzed in (False, True):  # a store never runs ANALYZE; the plan must not depend on it
        if analyzed:
            store.x("ANALYZE")
        for scope, params, index in (("", (), "runs_due"), (" AND root_id = ?", ("t3",), "runs_due_root")):
            steps = plan(store, claim_sql(scope, index), ("o", 1.0, 1.0, 1.0, 5000.0, 5000.0, *params))
            assert any(s.startswith(f"SEARCH runs USING INDEX {index} (") for s in steps), steps
            assert not any("TEMP B-TREE" in s for s in steps), steps  # no sort
            assert not any(s.startswith("SCAN") for s in steps), steps  # no full scan
        steps = plan(store, claim_sql(" AND id = ?", None), ("o", 1.0, 1.0, 1.0, 5000.0, 5000.0, "r00004"))
        assert not any("TEMP B-TREE" in s or s.startswith("SCAN") for s in steps), steps  # by primary key


def test_claims_take_due_runs_in_due_order_among_thousands(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    with store.transaction():
        for i in range(2000):
            add_run(store, f"late{i:04}", 10_000.0 + i)  # created in the future of the claims below
        for i in range(5):
            add_run(store, f"due{i}", 500.0 - i)  # due, newest first in insertion order
    store.clock = type("C", (), {"now": staticmethod(lambda: 600.0)})()
    got = [store.claim("me", 30)["id"] for _ in range(5)]
    assert got == ["due4", "due3", "due2", "due1", "due0"]
    assert store.claim("me", 30) is None


def test_migration_7_indexes_the_runs_of_an_older_database_in_flight(tmp_path):
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    with store.transaction():  # a database as schema 6 left it, with runs in every claimable state
        add_run(store, "pending", 100.0)
        add_run(store, "asleep", 50.0, "waiting", wake_at=300.0,
                waiting_for=WaitingFor("timer", until=300.0, builtin="sleep").to_json())
        add_run(store, "orphan", 10.0, "running", owner="dead", lease_expires=200.0, executions=1)
        add_run(store, "done", 1.0, "completed")
    store.close()
    conn = sqlite3.connect(path)  # back to the schema before the due indexes (later migrations re-run harmlessly)
    conn.executescript(f"""DROP INDEX runs_due; DROP INDEX runs_due_root;
                           UPDATE meta SET value = '{DUE_MIGRATION}' WHERE key = 'schema_version';""")
    conn.close()
    assert "runs_due" not in _indexes(path)
    store = SqliteStore(path)  # migrates to the current schema
    assert store.schema_version() == len(MIGRATIONS)
    assert {"runs_due", "runs_due_root"} <= _indexes(path)
    store.clock = type("C", (), {"now": staticmethod(lambda: 1000.0)})()
    got = [store.claim("me", 30)["id"] for _ in range(3)]
    assert got == ["pending", "orphan", "asleep"]  # due at 100, 200 (lease), 300 (wake)
    assert store.claim("me", 30) is None
    assert store.x("PRAGMA integrity_check").fetchone()[0] == "ok"


def _indexes(path):
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
