"""Deferred effects end to end: task() waits holding nothing, and complete_effect from any
process completes it exactly once and wakes the run (engine/deferred.py)."""

import json
import subprocess
import sys
import time

from conftest import wait_for

TASK = """
def main():
    v = task("build", {"n": 1})
    t = now()
    r = task("build", 2, check = False)
    return {"v": v, "t": t, "r": [r.ok, r.value, r.error, r.attempts]}
"""

COMPLETE = """
import json, sys, time
from flowmetal.store.sqlite import SqliteStore
from flowmetal.engine.deferred import complete_effect
db, run_id, seq, payload, start = sys.argv[1:]
store = SqliteStore(db)
while time.time() < float(start):
    time.sleep(0.001)
c = complete_effect(store, run_id, int(seq), result=json.loads(payload))
print(json.dumps({"outcome": c.outcome, "at": time.time(), "message": c.message}))
"""


def _complete_all(fm, run_id, seq, payloads):
    """Complete the same deferred effect from one process per payload, at the same moment."""
    start = time.time() + 1.5  # (after every interpreter has started)
    procs = [subprocess.Popen([sys.executable, "-c", COMPLETE, str(fm.db), run_id, str(seq), json.dumps(p),
                               str(start)], env=fm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in payloads]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_two_processes_complete_a_task_once_and_the_run_wakes_at_once(fm):
    fm.write("t.star", TASK)
    fm.write("quick.star", "def main():\n    return 42\n")
    worker = fm.spawn("worker", "--concurrency", "1")
    run_id = fm("start", "t.star").stdout.strip()
    row = fm.wait_state(run_id, "waiting")
    assert row["owner"] is None and json.loads(row["waiting_for"])["kind"] == "effect"
    # The one worker thread is free while the task waits: another run completes meanwhile.
    other = fm("start", "quick.star").stdout.strip()
    assert fm.wait_state(other, "completed")["result"] == "42"
    st = fm.store()
    [task] = st.waiting_deferred(queue="build")
    st.close()
    assert json.loads(task["detail"]) == {"key": f"{run_id}:1", "payload": {"n": 1}, "queue": "build"}
    results = _complete_all(fm, run_id, 1, [{"by": "a"}, {"by": "a"}])
    assert sorted(r["outcome"] for r in results) == ["completed", "duplicate"]
    assert "already completed" in [r for r in results if r["outcome"] == "duplicate"][0]["message"]
    won = [r for r in results if r["outcome"] == "completed"][0]
    wait_for(lambda: len(fm.journal(run_id)) >= 2, what="the run's next effect")
    st = fm.store()
    first_completed = st.get_deferred(run_id, 1)["completed_at"]
    st.close()
    t = json.loads(fm.journal(run_id)[1]["result"]) / 1e9  # now() right after the task
    assert 0 < t - first_completed < 1.0
    assert won["at"] >= first_completed
    # A second task: different payloads race; one wins, the other is told it conflicts.
    row = fm.wait_state(run_id, "waiting")
    assert row["owner"] is None
    results = _complete_all(fm, run_id, 3, [{"x": 1}, {"x": 2}])
    assert sorted(r["outcome"] for r in results) == ["completed", "conflict"]
    winner = [r for r in results if r["outcome"] == "completed"][0]
    row = fm.wait_state(run_id, "completed")
    value = json.loads(row["result"])
    assert value["v"] == {"by": "a"}
    assert value["r"][0] is True and value["r"][2] is None and value["r"][3] == 1
    assert value["r"][1] in ({"x": 1}, {"x": 2})
    # and completing either again afterwards changes nothing
    results = _complete_all(fm, run_id, 1, [{"by": "b"}])
    assert results[0]["outcome"] == "conflict"
    assert json.loads(fm.run_row(run_id)["result"]) == value
    assert winner  # (one of the two won)
    worker.terminate()
    worker.wait(20)


def test_a_task_error_fails_the_run_and_a_timeout_gives_up(fm):
    fm.write("t.star", 'def main():\n    return task("q", 1)\n')
    fm.write("late.star", 'def main():\n    r = task("q", 1, timeout = "1s", check = False)\n'
                          '    return [r.ok, r.error]\n')
    worker = fm.spawn("worker")
    run_id = fm("start", "t.star").stdout.strip()
    fm.wait_state(run_id, "waiting")
    from flowmetal.engine.deferred import complete_effect

    st = fm.store()
    assert complete_effect(st, run_id, 1, error="the build broke").outcome == "completed"
    st.close()
    row = fm.wait_state(run_id, "failed")
    assert "task() failed: the build broke" in row["error"]
    late = fm("start", "late.star").stdout.strip()
    row = fm.wait_state(late, "completed")
    assert json.loads(row["result"]) == [False, "timed out after 1s"]
    st = fm.store()
    assert st.get_deferred(late, 1)["state"] == "expired"
    assert complete_effect(st, late, 1, result=5).outcome == "expired"
    st.close()
    worker.terminate()
    worker.wait(20)


def test_a_task_of_a_cancelled_run_is_void(fm):
    fm.write("t.star", 'def main():\n    return task("q", 1)\n')
    run_id = fm("start", "t.star").stdout.strip()
    w = fm("worker", "--until-idle")
    assert w.returncode == 0, w.stderr
    assert fm.run_row(run_id)["state"] == "waiting"
    assert fm("cancel", run_id).returncode == 0
    from flowmetal.engine.deferred import complete_effect

    st = fm.store()
    c = complete_effect(st, run_id, 1, result=1)
    st.close()
    assert c.outcome == "void" and "cancelled" in c.message
