"""Which database a command uses, when it creates one, and reading while another process
writes (issue 12 items 12 and 14)."""

import os
import sqlite3
import subprocess
import sys
import time

import pytest


def flowmetal(*args, cwd, env=None, timeout=60):
    """The CLI as a user without FLOWMETAL_DB runs it."""
    base = {k: v for k, v in os.environ.items() if k != "FLOWMETAL_DB"}
    return subprocess.run([sys.executable, "-m", "flowmetal", *map(str, args)], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def here(tmp_path):
    d = tmp_path / "here"
    d.mkdir()
    return d


# --- item 12: no database for a command that fails first; say where a run landed -----


def test_a_file_that_fails_to_load_creates_no_database(tmp_path, here):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.star").write_text("this is not starlark\n")
    r = flowmetal("run", other / "notes.star", cwd=here)
    assert r.returncode == 2, r.stderr
    assert not (other / ".flowmetal").exists() and not (here / ".flowmetal").exists()


def test_a_missing_file_or_bad_arguments_create_no_database(here):
    r = flowmetal("run", "missing.star", cwd=here)
    assert r.returncode == 2 and "missing.star: no such file" in r.stderr
    (here / "f.star").write_text("def main(a):\n    return a\n")
    for args in (["-a", "b=1"], ["-a", "a:=NaN"], ["--timeout", "soon"]):
        r = flowmetal("run", "f.star", *args, cwd=here)
        assert r.returncode == 2, (args, r.stderr)
    assert not (here / ".flowmetal").exists()


def test_read_only_commands_create_no_database(here):
    r = flowmetal("runs", cwd=here)
    assert r.returncode == 0 and "1abc" not in r.stdout, r.stderr
    assert flowmetal("runs", "--json", cwd=here).stdout.strip() == "[]"
    for args in (["show", "1abc"], ["logs", "1abc"], ["signal", "1abc", "go"], ["cancel", "1abc"],
                 ["replay", "1abc"], ["resume", "1abc"]):
        r = flowmetal(*args, cwd=here)
        assert r.returncode == 2 and "no database at" in r.stderr, (args, r.stderr)
    assert flowmetal("resume", cwd=here).returncode == 0
    assert flowmetal("prune", "--older-than", "1d", cwd=here).returncode == 0
    assert not (here / ".flowmetal").exists()


def test_a_run_in_another_workspace_says_which_database(tmp_path, here):
    other = tmp_path / "other"
    other.mkdir()
    (other / "flow.star").write_text("def main():\n    return 7\n")
    r = flowmetal("run", other / "flow.star", cwd=here)
    assert r.returncode == 0, r.stderr
    db = other / ".flowmetal" / "flowmetal.db"
    assert db.exists() and not (here / ".flowmetal").exists()
    assert f"database {db} " in r.stderr and f"--db {db}" in r.stderr
    r = flowmetal("run", "flow.star", cwd=other)  # the same database as the next command's: nothing said
    assert r.returncode == 0 and "database" not in r.stderr


# --- item 14: runs, show and logs read while another process holds the write lock ----


def test_read_only_commands_do_not_wait_for_a_writer(fm):
    fm.write("hi.star", "def main():\n    log('hello')\n    return 1\n")
    r = fm("run", "hi.star")
    assert r.returncode == 0, r.stderr
    run_id = r.stderr.split()[1]
    writer = sqlite3.connect(fm.db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET updated_at = updated_at")
    try:
        for args in (["runs"], ["show", run_id], ["logs", run_id], ["runs", "--json"]):
            t = time.monotonic()
            r = fm(*args, env={"FLOWMETAL_BUSY_TIMEOUT": "3s"})
            assert r.returncode == 0, (args, r.stderr)
            assert time.monotonic() - t < 2.5, args
        assert "hello" in fm("logs", run_id).stdout
        r = fm("start", "hi.star", env={"FLOWMETAL_BUSY_TIMEOUT": "1s"})  # a writer still waits, and says so
        assert r.returncode == 2 and "locked" in r.stderr, r.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()
