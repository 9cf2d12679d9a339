"""Runs from the command line: results, exit codes, failures, arguments, the journal."""

import json
import time

from conftest import EXAMPLES, both_stores, run_id_of


@both_stores
def test_hello_example_prints_result_and_run_id(fm):
    r = fm("run", EXAMPLES / "hello.star", "-a", "name=world", cwd=EXAMPLES.parent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["message"] == "Hello, world!"
    run_id = run_id_of(r.stderr)
    assert "Hello, world!" in r.stderr  # the log streams to stderr
    row = fm.run_row(run_id)
    assert row["state"] == "completed" and row["owner"] is None  # an ended run has no owner
    builtins = [e["builtin"] for e in fm.journal(run_id)]
    assert builtins == ["now", "sh"]


@both_stores
def test_arguments_string_json_and_object(fm):
    fm.write("args.star", "def main(a, b, c = None):\n    return {'a': a, 'b': b, 'c': c}\n")
    r = fm("run", "args.star", "-a", "a=1", "-a", "b:=[1, 2]", "--args", '{"c": {"x": true}}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"a": "1", "b": [1, 2], "c": {"x": True}}


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_bad_json_argument_is_usage_error(fm):
    fm.write("args.star", "def main(b):\n    return b\n")
    r = fm("run", "args.star", "-a", "b:=[1,")
    assert r.returncode == 2
    assert "not valid JSON" in r.stderr and "Traceback" not in r.stderr


@both_stores
def test_runtime_error_fails_with_traceback(fm):
    fm.write("boom.star", "def helper(x):\n    for i in [x]:\n        print(i // 0)\n\ndef main():\n    return helper(now())\n")
    r = fm("run", "boom.star")
    assert r.returncode == 1
    assert "boom.star:3" in r.stderr and "boom.star:6" in r.stderr
    assert "builtins.star" not in r.stderr  # the prelude's frames are hidden
    assert fm.run_row(run_id_of(r.stderr))["state"] == "failed"


@both_stores
def test_fail_builtin_fails_the_run(fm):
    fm.write("f.star", "def main():\n    fail('nope, not today')\n")
    r = fm("run", "f.star")
    assert r.returncode == 1 and "nope, not today" in r.stderr


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_bad_builtin_argument_names_builtin_and_argument(fm):
    fm.write("bad.star", "def main():\n    return sh(['ls', 3])\n")
    r = fm("run", "bad.star")
    assert r.returncode == 1
    assert "sh(): argument cmd" in r.stderr and "bad.star:2" in r.stderr
    fm.write("bad2.star", "def main():\n    sleep('soon')\n")
    r = fm("run", "bad2.star")
    assert r.returncode == 1 and "sleep(): argument duration" in r.stderr


@both_stores
def test_sh_check_failure_fails_run_and_check_false_returns(fm):
    fm.write("sh.star", """
def main(check):
    r = sh("echo out; echo err >&2; exit 3", check = check)
    return {"code": r.exit_code, "out": r.stdout, "ok": r.ok}
""")
    r = fm("run", "sh.star", "-a", "check:=false")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"code": 3, "out": "out\n", "ok": False}
    r = fm("run", "sh.star", "-a", "check:=true")
    assert r.returncode == 1 and "exit code 3" in r.stderr and "err" in r.stderr


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_missing_function_and_missing_file_are_usage_errors(fm):
    fm.write("w.star", "def main():\n    return 1\n")
    r = fm("run", "w.star:nope")
    assert r.returncode == 2 and "no top-level function 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = fm("run", "missing.star")
    assert r.returncode == 2 and "missing.star" in r.stderr


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_syntax_error_is_reported_with_location(fm):
    fm.write("s.star", "def main(:\n    return 1\n")
    r = fm("run", "s.star")
    assert r.returncode == 2 and "s.star:1:10" in r.stderr and "Traceback" not in r.stderr


@both_stores
def test_start_then_worker_until_idle(fm):
    fm.write("w.star", "def main(n):\n    return n * 2\n")
    ids = [fm("start", "w.star", "-a", f"n:={i}").stdout.strip() for i in range(3)]
    assert all(fm.run_row(i)["state"] == "pending" for i in ids)
    r = fm("worker", "--until-idle")
    assert r.returncode == 0, r.stderr
    assert [json.loads(fm.run_row(i)["result"]) for i in ids] == [0, 2, 4]


@both_stores
def test_runs_show_logs_json(fm):
    fm.write("w.star", "def main():\n    print('line one')\n    log('line', 2)\n    return now()\n")
    r = fm("run", "w.star")
    run_id = run_id_of(r.stderr)
    seen = json.loads(r.stdout)
    assert isinstance(seen, float) and abs(seen - time.time()) < 60
    runs = json.loads(fm("runs", "--json").stdout)
    assert runs[0]["id"] == run_id and runs[0]["state"] == "completed"
    shown = json.loads(fm("show", run_id[:8], "--json").stdout)
    [entry] = shown["journal"]
    assert entry["builtin"] == "now" and entry["result"] / 1e9 == seen  # journaled as integer nanoseconds
    text = fm("show", run_id).stdout
    assert "journal" in text and "now" in text and repr(seen) in text  # shown as the seconds it returned
    logs = fm("logs", run_id).stdout
    assert "line one" in logs and "line 2" in logs
    assert fm("runs", "--status", "failed", "--json").stdout.strip() == "[]"


@both_stores
def test_unknown_run_is_an_error(fm):
    fm.write("w.star", "def main():\n    return 1\n")
    fm("run", "w.star")
    for cmd in (["show", "zzzz"], ["logs", "zzzz"], ["cancel", "zzzz"], ["signal", "zzzz", "x"]):
        r = fm(*cmd)
        assert r.returncode == 2 and "no run 'zzzz'" in r.stderr, cmd


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_effect_at_top_level_is_a_load_error(fm):
    fm.write("top.star", "x = now()\ndef main():\n    return x\n")
    r = fm("run", "top.star")
    assert r.returncode == 2
    assert "top.star:1:5" in r.stderr and "now() is an effect" in r.stderr


# SQLite only: a database file's missing directory
def test_missing_database_directory_is_clear(fm):
    fm.write("w.star", "def main():\n    return 1\n")
    r = fm("run", "w.star", "--db", fm.root / "nope" / "x.db")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


@both_stores
def test_failed_builtin_points_at_the_users_call(fm):
    fm.write("t.star", 'def step():\n    sh("exit 3")\n\ndef main():\n    step()\n')
    r = fm("run", "t.star")
    assert r.returncode == 1
    assert "error: sh() failed: exit code 3" in r.stderr
    assert "--> t.star:2:5" in r.stderr
    assert "builtins.star" not in r.stderr and "BuiltinError" not in r.stderr


# SQLite only: reads the SQLite file's bytes
def test_secret_in_a_failure_never_reaches_the_database(fm):
    fm.write("s.star", 'def main():\n    fail("token is " + secret("FM_SECRET_TOKEN"))\n')
    value = "s3cr3t-value-4242"
    r = fm("run", "s.star", env={"FM_SECRET_TOKEN": value})
    assert r.returncode == 1 and "token is ***" in r.stderr and value not in r.stderr
    st = fm.store()  # keep a connection so the WAL is not checkpointed away
    data = b"".join(p.read_bytes() for p in fm.db.parent.glob("flowmetal.db*"))
    assert value.encode() not in data
    st.close()


# SQLite only: where the .flowmetal marker puts the database file
def test_marker_file_puts_the_database_beside_it(tmp_path):
    import subprocess
    import sys

    ws = tmp_path / "w"
    (ws / "sub").mkdir(parents=True)
    (ws / ".flowmetal").write_text("")
    (ws / "a.star").write_text("def main():\n    return 7\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "FLOWMETAL_DB"}
    r = subprocess.run([sys.executable, "-m", "flowmetal", "run", "../a.star"], cwd=ws / "sub", env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "7"
    assert (ws / ".flowmetal.db").exists()


@both_stores
def test_effect_that_cannot_run_records_its_error(fm):
    fm.write("m.star", 'def main():\n    sh(["no-such-command-xyz"], check = False)\n')
    r = fm("run", "m.star")
    assert r.returncode == 1 and "no-such-command-xyz" in r.stderr
    run_id = run_id_of(r.stderr)
    entry = fm.journal(run_id)[0]
    assert entry["status"] == "failed" and "no-such-command-xyz" in entry["error"]
    row = fm.run_row(run_id)
    assert row["error"].splitlines()[0].startswith("sh(): ")  # the one-line message comes first
    r = fm("replay", run_id)
    assert r.returncode == 0 and "to the same failure" in r.stdout, r.stdout

