"""The grouped commit of pure effects (SPEC section 3, engine/gate_held.py) under SIGKILL: a
process killed while it holds pure entries and log lines in memory, or in the middle of the
grouped commit, loses only what nobody outside saw; the resumed run is consistent with every
value that reached a file or the database, and no outside effect is lost or performed twice."""

import json
import sqlite3

import pytest

HELD = """
def main(out):
    a = uuid()
    print("a=" + a)
    sh("echo a=%s >> %s" % (a, out))
    b = uuid()
    print("b=" + b)
    c = now()
    sh("echo b=%s >> %s" % (b, out))
    return [a, b]
"""

LOOP = """
def main(out, n = 30):
    for i in range(n):
        v = uuid()
        print("%d %s" % (i, v))
        sh("echo %d %s >> %s" % (i, v, out))
    return n
"""

PURE = """
def main(n = 1000):
    total = 0
    for i in range(n):
        t = now()
        print("%d" % i)
        total += 1
    return total
"""


def _only_run(fm):
    st = fm.store()
    try:
        [row] = st.list_runs(limit=10)
        return row["id"]
    finally:
        st.close()


def _logs(fm, run_id):
    st = fm.store()
    try:
        return [(r["seq"], r["n"], r["line"]) for r in st.logs(run_id)]
    finally:
        st.close()


def _integrity(fm):
    conn = sqlite3.connect(fm.db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_while_pure_effects_are_held(fm):
    out = fm.root / "out.txt"
    fm.write("held.star", HELD)
    # killed the second time the gate holds two items: b = uuid() and its print, before the second sh
    r = fm("run", "held.star", "-a", f"out={out}", env={"FLOWMETAL_FAULT": "kill-held@2"})
    assert r.returncode == -9, r.stderr
    run_id = _only_run(fm)
    assert fm.run_row(run_id)["state"] == "running"
    journal = fm.journal(run_id)
    assert [(e["builtin"], e["status"]) for e in journal] == [("uuid", "completed"), ("sh", "completed")]
    a = json.loads(journal[0]["result"])
    assert out.read_text().splitlines() == [f"a={a}"]
    assert [line for _, _, line in _logs(fm, run_id)] == [f"a={a}"]  # b was never seen outside

    r = fm("resume", run_id)
    assert r.returncode == 0, r.stderr
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["uuid", "sh", "uuid", "now", "sh"]
    b = json.loads(journal[2]["result"])
    assert json.loads(r.stdout) == [a, b]
    assert out.read_text().splitlines() == [f"a={a}", f"b={b}"]  # what the file saw is what the journal says
    assert [line for _, _, line in _logs(fm, run_id)] == [f"a={a}", f"b={b}"]
    assert not any(e["reexecuted"] for e in journal)
    assert _integrity(fm) == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 12, 30])
def test_sigkill_during_a_grouped_commit(fm, kill_at):
    out = fm.root / "out.txt"
    fm.write("loop.star", LOOP)
    # the Nth grouped commit is sh number N-1's started row with its uuid() and print line
    r = fm("run", "loop.star", "-a", f"out={out}", env={"FLOWMETAL_FAULT": f"kill-commit@{kill_at}",
                                                        "FLOWMETAL_SYNC": "full"})
    assert r.returncode == -9, r.stderr
    run_id = _only_run(fm)
    done = kill_at - 1  # steps whose commit went through
    assert len(fm.journal(run_id)) == 2 * done  # the commit in flight left nothing
    assert len(_logs(fm, run_id)) == done
    assert len(out.read_text().splitlines() if out.exists() else []) == done
    assert _integrity(fm) == "ok"

    r = fm("resume", run_id, env={"FLOWMETAL_SYNC": "full"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 30
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["uuid", "sh"] * 30
    values = [json.loads(e["result"]) for e in journal if e["builtin"] == "uuid"]
    expected = [f"{i} {v}" for i, v in enumerate(values)]
    assert out.read_text().splitlines() == expected  # 0 lost, 0 performed twice, each with its journaled value
    assert [line for _, _, line in _logs(fm, run_id)] == expected
    assert not any(e["reexecuted"] for e in journal)
    assert _integrity(fm) == "ok"


@pytest.mark.slow
def test_sigkill_during_a_bound_flush_of_a_pure_loop(fm):
    fm.write("pure.star", PURE)
    # the held group reaches its bound (engine/gate_held.py HOLD_ENTRIES) and commits alone
    r = fm("run", "pure.star", env={"FLOWMETAL_FAULT": "kill-commit@3", "FLOWMETAL_SYNC": "full"})
    assert r.returncode == -9, r.stderr
    run_id = _only_run(fm)
    before = fm.journal(run_id)
    assert 0 < len(before) < 1000 and [e["seq"] for e in before] == list(range(1, len(before) + 1))
    r = fm("resume", run_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 1000
    journal = fm.journal(run_id)
    assert [e["seq"] for e in journal] == list(range(1, 1001))
    assert [e["result"] for e in journal[:len(before)]] == [e["result"] for e in before]  # durable: replayed
    logs = _logs(fm, run_id)
    assert [(seq, line) for seq, _, line in logs] == [(i + 1, str(i)) for i in range(1000)]  # each line once
    assert _integrity(fm) == "ok"
