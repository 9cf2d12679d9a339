"""`flowmetal fork` and `flowmetal retry`: a new run from a prefix of another run's journal."""

import json
import sqlite3

from conftest import run_id_of

BUGGY = """\
def main(out):
    lines = []
    for i in range(3):
        sh("echo step%d >> " % i + out)
        lines.append("step%d" % i)
    return lines[3]
"""


def count_runs(fm):
    with sqlite3.connect(fm.db) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def failed_run(fm, text=BUGGY):
    fm.write("wf.star", text)
    side = fm.root / "side.txt"
    r = fm("run", "wf.star", "-a", f"out={side}")
    assert r.returncode == 1, r.stderr
    return run_id_of(r.stderr), side


def test_retry_completes_a_run_fixed_on_disk_without_redoing_its_effects(fm):
    old, side = failed_run(fm)
    assert side.read_text() == "step0\nstep1\nstep2\n"
    fm.write("wf.star", BUGGY.replace("lines[3]", "lines[2]"))  # the fix
    r = fm("retry", old)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "step2"
    new = run_id_of(r.stderr)
    assert f"forked from {old} at 3" in r.stderr
    assert side.read_text() == "step0\nstep1\nstep2\n"  # each earlier effect once: not performed again
    row = fm.run_row(new)
    assert (row["state"], row["forked_from"], row["forked_at"]) == ("completed", old, 3)
    assert [e["builtin"] for e in fm.journal(new)] == ["sh", "sh", "sh"]
    assert fm.run_row(old)["state"] == "failed"  # the old run is left as it was
    shown = fm("show", new)
    assert f"forked from {old} at 3" in shown.stdout
    doc = json.loads(fm("show", new, "--json").stdout)
    assert doc["forked_from"] == old and doc["forked_at"] == 3


def test_retry_after_a_failed_effect_redoes_only_that_effect(fm):
    text = """\
def main(out):
    for i in range(3):
        sh("echo step%d >> " % i + out)
    sh("exit 3")
    return "done"
"""
    old, side = failed_run(fm, text)
    assert json.loads(fm.journal(old)[-1]["result"])["exit_code"] == 3
    fm.write("wf.star", text.replace("exit 3", "true"))
    r = fm("retry", old)
    assert r.returncode == 0, r.stderr
    new = run_id_of(r.stderr)
    assert fm.run_row(new)["forked_at"] == 3  # just before the failing entry
    assert side.read_text() == "step0\nstep1\nstep2\n"
    assert [e["args"] for e in fm.journal(new)][-1] == json.dumps({"cmd": "true"}, separators=(",", ":"))


def test_fork_that_does_not_match_the_prefix_is_refused_and_creates_nothing(fm):
    old, side = failed_run(fm)
    before = count_runs(fm)
    fm.write("wf.star", BUGGY.replace('"echo step%d >> "', '"echo STEP%d >> "'))
    r = fm("fork", old, "--at", "2", "--current")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot fork run {old} at 2" in r.stderr
    assert "position 1" in r.stderr
    assert f'recorded sh({{"cmd":"echo step0 >> {side}"}})' in r.stderr
    assert f'called sh({{"cmd":"echo STEP0 >> {side}"}})' in r.stderr
    assert count_runs(fm) == before  # nothing created: no run, no journal, no sources
    with sqlite3.connect(fm.db) as conn:
        assert conn.execute("SELECT count(DISTINCT run_id) FROM journal").fetchone()[0] == 1
        assert conn.execute("SELECT count(DISTINCT run_id) FROM run_sources").fetchone()[0] == 1
    assert side.read_text() == "step0\nstep1\nstep2\n"
    # The run's pinned code matches its own prefix: without --current the fork is accepted (queued).
    q = fm("fork", old, "--at", "2", "--queue")
    assert q.returncode == 0, q.stderr
    assert fm.run_row(q.stdout.strip())["state"] == "pending"


def test_fork_at_1_current_of_a_completed_run(fm):
    fm.write("ok.star", 'def main(out):\n    sh("echo one >> " + out)\n    sh("echo two >> " + out)\n'
                        '    return "ok"\n')
    side = fm.root / "side.txt"
    r = fm("run", "ok.star", "-a", f"out={side}")
    assert r.returncode == 0, r.stderr
    old = run_id_of(r.stderr)
    f = fm("fork", old, "--at", "1", "--current")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout) == "ok"
    assert side.read_text() == "one\ntwo\ntwo\n"  # entry 1 copied, entry 2 performed live
    new = run_id_of(f.stderr)
    row = fm.run_row(new)
    assert (row["state"], row["forked_from"], row["forked_at"], row["args"]) == \
        ("completed", old, 1, fm.run_row(old)["args"])


def test_fork_shares_ended_children_of_the_prefix(fm):
    fm.write("fan.star", """\
def child(n):
    return n * 10

def main(out):
    hs = [spawn(child, 1), spawn(child, 2)]
    sh("echo spawned >> " + out)
    rs = wait(hs)
    return [r.value for r in rs]
""")
    side = fm.root / "side.txt"
    r = fm("run", "fan.star", "-a", f"out={side}")
    assert r.returncode == 0, r.stderr
    old = run_id_of(r.stderr)
    f = fm("fork", old, "--at", "3")  # spawn, spawn, sh copied; wait live, on the old run's ended children
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout) == [10, 20]
    assert side.read_text() == "spawned\n"
    assert count_runs(fm) == 4  # no child run was started again


def test_retry_and_fork_refuse_what_they_cannot_do(fm):
    fm.write("ok.star", "def main():\n    return 1\n")
    r = fm("run", "ok.star")
    old = run_id_of(r.stderr)
    before = count_runs(fm)
    r = fm("retry", old)
    assert r.returncode == 2 and "not failed" in r.stderr and "Traceback" not in r.stderr
    r = fm("fork", old, "--at", "5")
    assert r.returncode == 2 and "has 0 journal entries" in r.stderr
    assert count_runs(fm) == before


SIGNALLED = """\
def main(out):
    a = wait_signal("a")
    sh("echo got " + a + " >> " + out)
    b = wait_signal("b")
    return [a, b]
"""


def signalled_run(fm):
    """A completed run that consumed signal a at entry 1 and b at entry 3, and was also sent
    a second b and a c it never consumed."""
    fm.write("sig.star", SIGNALLED)
    side = fm.root / "side.txt"
    r = fm("start", "sig.star:main", "-a", f"out={side}")
    assert r.returncode == 0, r.stderr
    old = r.stdout.strip()
    for name, payload in (("a", '"1"'), ("b", '"2"'), ("b", '"2bis"'), ("c", '"3"')):
        assert fm("signal", old, name, payload).returncode == 0
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    row = fm.run_row(old)
    assert (row["state"], json.loads(row["result"])) == ("completed", ["1", "2"])
    assert side.read_text() == "got 1\n"
    return old, side


def signals_of(fm, run_id):
    with sqlite3.connect(fm.db) as conn:
        return conn.execute("SELECT name, payload, consumed_seq FROM signals WHERE run_id = ? ORDER BY id",
                            (run_id,)).fetchall()


def test_fork_without_reapply_signals_leaves_the_old_runs_signals_behind(fm):
    old, side = signalled_run(fm)
    q = fm("fork", old, "--at", "1", "--queue")
    assert q.returncode == 0, q.stderr
    new = q.stdout.strip()
    assert signals_of(fm, new) == []
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    row = fm.run_row(new)
    assert row["state"] == "waiting"  # for b: the old run's b is not delivered to it
    assert json.loads(row["waiting_for"])["name"] == "b"
    assert side.read_text() == "got 1\ngot 1\n"  # the prefix replayed a's payload; sh ran live once
    assert len(signals_of(fm, old)) == 4  # the old run keeps its own


def test_fork_with_reapply_signals_delivers_what_the_prefix_did_not_consume(fm):
    old, side = signalled_run(fm)
    f = fm("fork", old, "--at", "1", "--reapply-signals")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout) == ["1", "2"]
    new = run_id_of(f.stderr)
    assert f"forked from {old} at 1; 3 signal(s) reapplied" in f.stderr
    # a was consumed inside the prefix (entry 1): not sent again; b, b, c were consumed after it or never,
    # and arrive in the order the old run received them: the first b is consumed at entry 3.
    assert signals_of(fm, new) == [("b", '"2"', 3), ("b", '"2bis"', None), ("c", '"3"', None)]
    assert side.read_text() == "got 1\ngot 1\n"
    # at 0 every signal is reapplied, a included
    f = fm("fork", old, "--at", "0", "--reapply-signals")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout) == ["1", "2"]
    assert [s[0] for s in signals_of(fm, run_id_of(f.stderr))] == ["a", "b", "b", "c"]
    assert signals_of(fm, old)[0] == ("a", '"1"', 1)  # the old run's rows are untouched


def test_retry_reapply_signals(fm):
    fm.write("sig.star", SIGNALLED.replace("return [a, b]", "return [a, b][2]"))
    side = fm.root / "side.txt"
    old = fm("start", "sig.star:main", "-a", f"out={side}").stdout.strip()
    for name, payload in (("a", '"1"'), ("b", '"2"')):
        assert fm("signal", old, name, payload).returncode == 0
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    assert fm.run_row(old)["state"] == "failed"
    fm.write("sig.star", SIGNALLED)
    r = fm("retry", old, "--reapply-signals")  # kept: all 3 entries (the program failed after them)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["1", "2"] and "0 signal(s) reapplied" in r.stderr


CALLED_BACK = """\
def main(out):
    cb = callback(name = "ok", approval = True)
    sh("echo posted >> " + out)
    d = wait_callback(cb)
    sh("echo decided >> " + out)
    return d
"""


def called_back_run(fm):
    """A completed run whose callback (entry 1) was called with {"approved": true}."""
    from flowmetal.engine.deferred import complete_effect

    fm.write("cb.star", CALLED_BACK)
    side = fm.root / "side.txt"
    old = fm("start", "cb.star:main", "-a", f"out={side}").stdout.strip()
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    assert fm.run_row(old)["state"] == "waiting"
    st = fm.store()
    try:  # what the server's POST /callbacks/{token} does
        assert complete_effect(st, old, 1, result={"approved": True}).outcome == "completed"
    finally:
        st.close()
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    assert json.loads(fm.run_row(old)["result"]) == {"approved": True}
    return old, side


def test_a_fork_after_callback_gets_a_callback_of_its_own(fm):
    from flowmetal.engine import deferred

    old, side = called_back_run(fm)
    q = fm("fork", old, "--at", "2", "--queue")  # callback() and sh copied; wait_callback live
    assert q.returncode == 0, q.stderr
    new = q.stdout.strip()
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    assert fm.run_row(new)["state"] == "waiting"  # the old run's call is not carried over
    secret = deferred.server_secret(str(fm.db.parent))
    st = fm.store()
    try:
        # The old URL still answers for the old run (already completed: duplicate), never the new one.
        old_token = deferred.callback_token(secret, old, 1)
        assert deferred.complete_callback(st, old_token, {"approved": True}).outcome == "duplicate"
        assert st.get_deferred(new, 1)["state"] == "waiting"
        new_token = deferred.callback_token(secret, new, 1)
        assert deferred.complete_callback(st, new_token, {"approved": False}).outcome == "completed"
    finally:
        st.close()
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    row = fm.run_row(new)
    assert (row["state"], json.loads(row["result"])) == ("completed", {"approved": False})
    assert side.read_text() == "posted\ndecided\ndecided\n"


def test_reapply_signals_carries_a_callbacks_payload_over(fm):
    old, side = called_back_run(fm)
    f = fm("fork", old, "--at", "2", "--reapply-signals")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout) == {"approved": True}
    assert side.read_text() == "posted\ndecided\ndecided\n"
