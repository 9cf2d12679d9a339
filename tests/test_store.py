"""The SQLite store's contract: schema versions, run lookup, ownership fencing, concurrent opening."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from flowmetal.errors import StoreError, UserError
from flowmetal.store.sqlite import MIGRATIONS, SqliteStore


@pytest.fixture
def store(tmp_path):
    st = SqliteStore(tmp_path / "s.db")
    yield st
    st.close()


def add_run(st, run_id, state="pending", owner=None):
    st.insert_run({"id": run_id, "file": "w.star", "function": "main", "args": "{}", "state": state,
                   "created_at": time.time(), "root_id": run_id, "owner": owner})


def test_schema_is_versioned_and_a_newer_database_is_refused(tmp_path):
    st = SqliteStore(tmp_path / "v.db")
    assert st.schema_version() == len(MIGRATIONS)
    st.close()
    SqliteStore(tmp_path / "v.db").close()  # opening again migrates nothing
    conn = sqlite3.connect(tmp_path / "v.db")
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 999, newer than"):
        SqliteStore(tmp_path / "v.db")


def test_missing_directory_and_garbage_file_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(tmp_path / "nope" / "x.db")
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="garbage.db"):
        SqliteStore(bad)


def test_find_run_by_prefix(store):
    add_run(store, "abc111")
    add_run(store, "abc222")
    assert store.find_run("abc1")["id"] == "abc111"
    with pytest.raises(UserError, match="ambiguous"):
        store.find_run("abc")
    with pytest.raises(UserError, match="no run 'zzz'"):
        store.find_run("zzz")


def test_only_the_owner_writes_the_journal(store):
    add_run(store, "r1")
    now = time.time()
    claimed = store.claim("me", 30, run_id="r1")
    assert claimed["owner"] == "me" and claimed["executions"] == 1
    assert store.claim("other", 30, run_id="r1") is None  # lease is current
    entry = {"run_id": "r1", "seq": 1, "builtin": "now", "args": "{}", "digest": "d", "status": "completed",
             "result": "1.0", "error": None, "data": None, "started_at": now, "ended_at": now}
    assert store.insert_journal(entry, "other") is False
    assert store.insert_journal(entry, "me") is True
    assert store.update_journal("r1", 1, "other", status="failed") is False
    # the lease expires: another owner takes over, and the old one can no longer write
    store.update_run("r1", lease_expires=0)
    assert store.claim("other", 30, run_id="r1")["owner"] == "other"
    assert store.insert_journal({**entry, "seq": 2}, "me") is False
    assert [e["seq"] for e in store.journal("r1")] == [1]


RACE = textwrap.dedent("""
    import os, sys, time
    from flowmetal.store.sqlite import SqliteStore
    go, db = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.0005)
    try:
        SqliteStore(db).list_runs()
        print("ok")
    except Exception as e:
        print("ERR", e)
""")


def test_processes_creating_one_database_at_the_same_instant(tmp_path):
    script = tmp_path / "race.py"
    script.write_text(RACE)
    for trial in range(6):
        go, db = tmp_path / f"go{trial}", tmp_path / f"race{trial}.db"
        procs = [subprocess.Popen([sys.executable, str(script), str(go), str(db)], stdout=subprocess.PIPE, text=True)
                 for _ in range(8)]
        time.sleep(0.6)  # let them import, then start them together
        go.write_text("")
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert outs == ["ok"] * 8, outs
    assert os.path.exists(db)


def test_a_locked_database_is_a_clear_error_and_loses_nothing(fm):
    fm.write("w.star", "def main():\n    return 1\n")
    assert fm("run", "w.star").returncode == 0
    holder = sqlite3.connect(fm.db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        t0 = time.time()
        r = fm("start", "w.star", env={"FLOWMETAL_BUSY_TIMEOUT": "1s"})
        assert r.returncode == 2
        assert "is locked by another process (waited 1s)" in r.stderr and "Traceback" not in r.stderr
        assert time.time() - t0 < 8
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    runs = fm("runs", "--json")
    assert runs.returncode == 0 and runs.stdout.count('"state": "completed"') == 1


STAMP = """
def main(out):
    t = now()
    sh("echo '%s' > %s" % (json.encode(t), out))
    wait_signal("go")
    return {"t": t, "later": now() >= t}
"""

# What schema version 2 wrote: the journal keyed (run_id, seq) WITHOUT ROWID, no runs.num,
# now() recorded as float seconds, and no blobs.touched_at (migration 4).
TO_V2 = """
CREATE TABLE journal_v2 (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, builtin TEXT NOT NULL, args TEXT NOT NULL,
    digest TEXT NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT, data TEXT,
    started_at REAL NOT NULL, ended_at REAL, reexecuted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO journal_v2 SELECT run_id, seq, builtin, args, digest, status, result, error, data,
    started_at, ended_at, reexecuted FROM journal;
DROP TABLE journal;
ALTER TABLE journal_v2 RENAME TO journal;
DROP INDEX runs_num;
ALTER TABLE runs DROP COLUMN num;
ALTER TABLE blobs DROP COLUMN touched_at;
ALTER TABLE runs DROP COLUMN flowmetal_version;
ALTER TABLE runs DROP COLUMN prelude_digest;
ALTER TABLE runs DROP COLUMN digest_version;
DROP TABLE workers;
ALTER TABLE runs DROP COLUMN forked_from;
ALTER TABLE runs DROP COLUMN forked_at;
DROP INDEX runs_due;
DROP INDEX runs_due_root;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def test_a_run_in_flight_replays_the_same_values_after_the_schema_3_migration(fm):
    out = fm.root / "t.json"
    fm.write("stamp.star", STAMP)
    run_id = fm("start", "stamp.star", "-a", f"out={out}").stdout.strip()
    assert fm("worker", "--until-idle").returncode == 0
    assert fm.run_row(run_id)["state"] == "waiting"
    seen = json.loads(out.read_text())

    conn = sqlite3.connect(fm.db)
    conn.executescript(TO_V2)
    [(seq, ns)] = conn.execute("SELECT seq, result FROM journal WHERE builtin = 'now'").fetchall()
    conn.execute("UPDATE journal SET result = ? WHERE run_id = ? AND seq = ?", (repr(int(ns) / 1e9), run_id, seq))
    conn.commit()
    conn.close()

    assert fm("signal", run_id, "go").returncode == 0  # opens the database: migrates it
    r = fm("worker", "--until-idle")
    assert r.returncode == 0, r.stderr
    run = fm.run_row(run_id)
    assert run["state"] == "completed", run["error"]
    assert json.loads(run["result"]) == {"t": seen, "later": True}  # the very float it saw before
    st = fm.store()
    assert st.schema_version() == len(MIGRATIONS)
    assert [e["builtin"] for e in st.journal(run_id)] == ["now", "sh", "wait_signal", "now"]
    assert [e["seq"] for e in st.journal(run_id)] == [1, 2, 3, 4]
    st.close()


def test_seconds_recorded_by_schema_2_become_nanoseconds_that_divide_back_exactly():
    import random

    from flowmetal.store.sqlite import seconds_to_ns

    rng = random.Random(7)
    for _ in range(5000):
        seconds = (time.time_ns() + rng.randint(-10**17, 10**17)) / 1e9  # what time.time() gives
        assert seconds_to_ns(repr(seconds)) / 1e9 == seconds


# --- file modes (issue 12 item 8) -----------------------------------------------

MODES = textwrap.dedent("""
    import os, stat, sys
    os.umask(0)  # the most permissive umask: the modes must not depend on it
    from flowmetal.store import private_dir
    from flowmetal.store.sqlite import SqliteStore
    d = private_dir(sys.argv[1])
    st = SqliteStore(os.path.join(d, "flowmetal.db"))
    st.insert_run({"id": "r1", "file": "w.star", "function": "main", "args": "{}", "state": "pending",
                   "created_at": 1.0, "root_id": "r1"})
    st.list_runs()  # (the -wal and -shm files exist while a connection is open)
    for name in ("", "flowmetal.db", "flowmetal.db-wal", "flowmetal.db-shm"):
        print(name or ".", oct(stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode)))
""")


def test_the_database_its_wal_and_shm_are_private_whatever_the_umask(tmp_path):
    script = tmp_path / "modes.py"
    script.write_text(MODES)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "ws" / ".flowmetal")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == [". 0o700", "flowmetal.db 0o600", "flowmetal.db-wal 0o600",
                                        "flowmetal.db-shm 0o600"]


def test_the_cli_creates_a_private_database_directory(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "w.star").write_text("def main():\n    return 1\n")
    env = {k: v for k, v in os.environ.items() if k != "FLOWMETAL_DB"}
    r = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0); from flowmetal.cli import main; "
                        "sys.argv = ['flowmetal', 'run', 'w.star']; main()"],
                       cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(ws / ".flowmetal").st_mode & 0o777) == "0o700"
    assert oct(os.stat(ws / ".flowmetal" / "flowmetal.db").st_mode & 0o777) == "0o600"


# --- reading while another process writes (issue 12 item 14) ---------------------------

def test_a_read_only_store_reads_while_another_connection_holds_the_write_lock(tmp_path):
    path = tmp_path / "ro.db"
    st = SqliteStore(path)
    add_run(st, "r1")
    st.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # what a busy worker or scheduler holds
    holder.execute("UPDATE runs SET error = 'uncommitted' WHERE id = 'r1'")
    try:
        t0 = time.time()
        ro = SqliteStore(path, readonly=True, busy_timeout_ms=5000)
        assert [r["id"] for r in ro.list_runs()] == ["r1"] and ro.get_run("r1")["error"] is None
        with ro.transaction():  # a snapshot, not the write lock
            assert ro.find_run("r1")["state"] == "pending"
        with pytest.raises(StoreError):
            add_run(ro, "r2")  # it never writes
        ro.close()
        rw = SqliteStore(path, busy_timeout_ms=5000)  # a current schema is opened without the lock too
        assert rw.get_run("r1")["state"] == "pending"
        rw.close()
        assert time.time() - t0 < 2.5  # neither waited for the 5 s busy timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_read_only_store_migrates_an_older_schema_once_and_refuses_a_missing_file(tmp_path):
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)  # back to schema 8, as the release before migration 9 left it
    conn.execute("DROP INDEX runs_due")
    conn.execute("DROP INDEX runs_due_root")
    conn.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    ro = SqliteStore(path, readonly=True)  # after an upgrade, `flowmetal runs` still works
    assert ro.list_runs() == []
    ro.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(len(MIGRATIONS))
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_due'").fetchone() is not None
    conn.close()
    with pytest.raises(StoreError, match="no database at"):
        SqliteStore(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()
