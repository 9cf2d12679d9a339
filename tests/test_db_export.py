"""`flowmetal db export` (issue 15): runs, journals and fires from a real database, with runs
in several states and a schedule's history, read back with the csv and json modules; the
same export from PostgreSQL after `db copy`; bad arguments; and that sqlite-utils, which
db copy and db export use, is imported by no other command."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import REPO, run_id_of, wait_for

TOKEN = "s3cr3t-export-token-4711"
OK = 'def main(n):\n    tok = secret("FM_EXPORT_TOKEN")\n    return sh("echo $TOK-" + str(n), env = {"TOK": tok}).stdout\n'
BAD = 'def main():\n    x = now()\n    fail("boom at %d" % int(x))\n'
WAITER = 'def main():\n    return wait_signal("go")\n'
TICK = ('def tick():\n    return sh("echo tick").stdout.strip()\n\n'
        'schedule(name = "tick", cron = "* * * * * *", run = tick, overlap = "allow")\n')
RUN_COLUMNS = ["id", "num", "file", "function", "args", "state", "result", "error", "created_at", "ended_at"]
JOURNAL_COLUMNS = ["run_id", "seq", "builtin", "args", "digest", "status", "result", "error", "data",
                   "started_at", "ended_at", "reexecuted"]
FIRE_COLUMNS = ["schedule", "nominal", "action", "reason", "run_id", "recorded_at"]


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """A SQLite workspace with runs completed, failed, waiting and pending, and fires."""
    from conftest import Flowmetal

    root = tmp_path_factory.mktemp("export") / "ws"
    root.mkdir()
    (root / ".flowmetal").mkdir()
    fm = Flowmetal(root, root / ".flowmetal" / "flowmetal.db")
    fm.env["FM_EXPORT_TOKEN"] = TOKEN
    fm.write("ok.star", OK)
    fm.write("bad.star", BAD)
    fm.write("w.star", WAITER)
    fm.write("sched/tick.star", TICK)
    ids = {}
    r = fm("run", "ok.star", "-a", "n=1")
    assert r.returncode == 0, r.stderr
    ids["completed"] = run_id_of(r.stderr)
    r = fm("run", "bad.star")
    assert r.returncode == 1, r.stderr
    ids["failed"] = run_id_of(r.stderr)
    ids["waiting"] = fm("start", "w.star").stdout.strip()
    assert fm("worker", "--until-idle").returncode == 0
    sched = fm.spawn("schedule", "sched")
    try:
        wait_for(lambda: len(re.findall(r" end +tick ", sched.err())) >= 2, timeout=20, what="two fires")
    finally:
        os.killpg(sched.pid, signal.SIGTERM)
        assert sched.wait(20) == 0, sched.err()
    ids["pending"] = fm("start", "ok.star", "-a", "n=2").stdout.strip()  # (after the scheduler's worker)
    st = fm.store()
    try:
        rows = {"runs": [dict(r) for r in st.x("SELECT * FROM runs ORDER BY num")],
                "journal": [dict(r) for r in st.x("SELECT * FROM journal ORDER BY run_id, seq")],
                "fires": [dict(r) for r in st.x("SELECT * FROM fires ORDER BY schedule, nominal")]}
    finally:
        st.close()
    yield fm, ids, rows
    fm.kill_all()


def _typed(value, like):
    """A CSV field read back as the stored value's type (CSV has only text)."""
    if value == "":
        return None if like is None or like != "" else ""
    if isinstance(like, float):
        return float(value)
    if isinstance(like, int):
        return int(value)
    return value


def _check_against(rows, stored, columns_first):
    assert len(rows) == len(stored)
    for got, want in zip(rows, stored):
        assert list(got)[:len(columns_first)] == columns_first
        want = {k: v for k, v in want.items() if k != "key"}  # (SQLite's derived journal key is left out)
        assert set(got) == set(want)
        assert {k: _typed(v, want[k]) if isinstance(v, str) else v for k, v in got.items()} == want


def test_csv_of_every_table_reads_back_as_stored(workload, tmp_path):
    fm, ids, stored = workload
    out = tmp_path / "csv"
    r = fm("db", "export", "-o", out)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["fires.csv", "journal.csv", "runs.csv"]
    for table in ("runs", "journal", "fires"):
        assert f"{table}: {len(stored[table])} rows to {out / (table + '.csv')}" in r.stderr
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    states = {row["id"]: row["state"] for row in runs}
    assert {state: states[run_id] for state, run_id in ids.items()} == {s: s for s in ids}
    assert {"completed", "failed", "waiting", "pending"} <= {row["state"] for row in runs}
    by_id = {row["id"]: row for row in runs}
    assert json.loads(by_id[ids["completed"]]["result"]) == "***-1\n"  # the secret stays masked
    assert "boom at" in by_id[ids["failed"]]["error"]
    assert by_id[ids["pending"]]["ended_at"] == "" and by_id[ids["waiting"]]["waiting_for"]
    assert [row["num"] for row in runs] == sorted((row["num"] for row in runs), key=int)
    with open(out / "runs.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:2] == ["id", "num"] and set(RUN_COLUMNS) <= set(header)
    _check_against(runs, stored["runs"], ["id", "num"])

    with open(out / "journal.csv", newline="") as f:
        journal = list(csv.DictReader(f))
    assert list(journal[0]) == JOURNAL_COLUMNS
    _check_against(journal, stored["journal"], ["run_id", "seq"])
    builtins = {(row["run_id"], row["builtin"]) for row in journal}
    assert {(ids["completed"], "sh"), (ids["failed"], "now"), (ids["waiting"], "wait_signal")} <= builtins

    with open(out / "fires.csv", newline="") as f:
        fires = list(csv.DictReader(f))
    assert len(fires) >= 2 and {row["schedule"] for row in fires} == {"tick"}
    assert set(FIRE_COLUMNS) <= set(fires[0]) and "started" in {row["action"] for row in fires}
    _check_against(fires, stored["fires"], ["schedule", "nominal"])
    for name in os.listdir(out):
        assert TOKEN not in (out / name).read_text()


def test_ndjson_of_one_table_to_stdout_and_to_a_file(workload, tmp_path):
    fm, ids, stored = workload
    r = fm("db", "export", "--table", "journal", "--format", "ndjson")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(stored["journal"]) and f"journal: {len(lines)} rows" in r.stderr
    entries = [json.loads(line) for line in lines]
    assert [list(e) for e in entries] == [JOURNAL_COLUMNS] * len(entries)
    assert entries == [{k: v for k, v in e.items() if k != "key"} for e in stored["journal"]]
    assert TOKEN not in r.stdout and "***" in r.stdout

    path = tmp_path / "runs.json"
    r = fm("db", "export", "--table", "runs", "--format", "ndjson", "-o", path)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    runs = [json.loads(line) for line in path.read_text().splitlines()]
    assert runs == stored["runs"]  # (numbers keep their types; JSON columns stay JSON text)
    assert {r["id"]: r["state"] for r in runs}[ids["failed"]] == "failed"
    # into an existing directory: DIR/TABLE.ndjson
    r = fm("db", "export", "--table", "fires", "--format", "ndjson", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    fires = [json.loads(line) for line in (tmp_path / "fires.ndjson").read_text().splitlines()]
    assert fires == stored["fires"]


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "Invalid value for '--format'"),
    (["--table", "logs"], "Invalid value for '--table'"),
    ([], "exporting every table needs -o DIR"),
    (["-o", "{file}"], "is a file; exporting every table needs a directory"),
    (["--table", "runs", "-o", "{missing}/runs.csv"], "does not exist"),
    (["--table", "runs", "--db", "{missing}/x.db"], "no database at"),
])
def test_bad_arguments_exit_2_with_one_clear_line(workload, tmp_path, args, message):
    fm, _, _ = workload
    (tmp_path / "a-file").write_text("keep me")
    args = [a.format(file=tmp_path / "a-file", missing=tmp_path / "missing") for a in args]
    r = fm("db", "export", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    assert (tmp_path / "a-file").read_text() == "keep me" and not (tmp_path / "missing").exists()


def test_a_reader_that_stops_early_ends_the_export_quietly(workload):
    """`db export --table journal | head -1`: standard output's reader is gone (here: the pipe's
    read end is closed before the export starts, so its first write fails)."""
    fm, _, _ = workload
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "flowmetal", "db", "export", "--table", "journal"],
                              cwd=fm.root, env=fm.env, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_no_database_is_created_by_an_export(tmp_path):
    from conftest import Flowmetal

    fm = Flowmetal(tmp_path, tmp_path / "none.db")
    r = fm("db", "export", "-o", tmp_path / "out")
    assert r.returncode == 2 and "no database at" in r.stderr and "nothing to export" in r.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cluster():
    from pgcluster import Cluster

    c = Cluster().start()
    yield c
    c.stop()


TABLES_BUT_SCHEDULES = ("runs", "sources", "run_sources", "journal", "logs", "signals", "blobs", "fires",
                        "api_tokens", "idempotency_keys", "workers")


def _counts(fm, db):
    from flowmetal.store import open_store

    st = open_store(str(db))
    try:
        return {t: st.x(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "journal", "blobs", "schedules")}
    finally:
        st.close()


@pytest.mark.parametrize("dest", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_copy_that_fails_late_leaves_the_destination_as_it_was(workload, tmp_path, request, dest):
    """The destination already holds the schedule (and nothing else): with --force, runs and
    journals go in first, then the schedule's row collides; the one transaction is rolled
    back, so the runs copied before the collision are not there either."""
    import sqlite3

    fm, _, stored = workload
    if dest == "sqlite":
        target = tmp_path / "dest.db"
    else:
        target = request.getfixturevalue("cluster").create_database("failed_copy")
    assert fm("db", "copy", fm.db, target).returncode == 0
    if dest == "sqlite":
        with sqlite3.connect(target) as conn:
            for table in TABLES_BUT_SCHEDULES:
                conn.execute(f"DELETE FROM {table}")
    else:
        import psycopg

        with psycopg.connect(str(target), autocommit=True) as conn:
            for table in TABLES_BUT_SCHEDULES:
                conn.execute(f"DELETE FROM {table}")
    before = _counts(fm, target)
    assert before == {"runs": 0, "journal": 0, "blobs": 0, "schedules": 1}
    r = fm("db", "copy", "--force", fm.db, target)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "cannot copy into schedules: a row with the same key is already there" in r.stderr
    assert "Traceback" not in r.stderr and f"runs: {len(stored['runs'])} rows" in r.stderr
    assert _counts(fm, target) == before


@pytest.mark.postgres
def test_the_same_export_from_postgresql_after_db_copy(workload, tmp_path, cluster):
    fm, _, stored = workload
    url = cluster.create_database("export")
    r = fm("db", "copy", fm.db, url)
    assert r.returncode == 0, r.stderr
    for fmt in ("csv", "ndjson"):
        lite, pg = tmp_path / f"lite-{fmt}", tmp_path / f"pg-{fmt}"
        assert fm("db", "export", "--format", fmt, "-o", lite).returncode == 0
        r = fm("db", "export", "--format", fmt, "-o", pg, "--db", url)
        assert r.returncode == 0, r.stderr
        for table in ("runs", "journal", "fires"):
            name = f"{table}.{fmt}"
            assert (pg / name).read_bytes() == (lite / name).read_bytes(), name  # byte for byte
            assert f"{table}: {len(stored[table])} rows" in r.stderr
    r = fm("db", "export", "--table", "runs", "--db", url + "-nope")
    assert r.returncode == 2 and "cannot open database" in r.stderr and "Traceback" not in r.stderr


IMPORTED = """
import sys
from flowmetal.cli import main
sys.argv = ["flowmetal", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("sqlite_utils imported:", "sqlite_utils" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("args, imported", [
    (["--version"], False),
    (["runs"], False),
    (["show", "--help"], False),
    (["db", "export", "--table", "runs"], True),  # (the check can fail: this command does import it)
])
def test_sqlite_utils_is_imported_only_by_db_copy_and_export(workload, args, imported):
    fm, _, _ = workload
    env = {**fm.env, "PYTHONPATH": str(REPO / "src" / "python")}
    r = subprocess.run([sys.executable, "-c", IMPORTED, *args], cwd=fm.root, env=env, capture_output=True,
                       text=True, timeout=60)
    assert f"sqlite_utils imported: {imported}" in r.stderr, r.stderr
