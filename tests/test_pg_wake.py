"""Wake-ups across processes on PostgreSQL (issue 15, item 3), each within one second while
the waiting worker's poll fallback is 30 s (FLOWMETAL_POLL=30): only a NOTIFY, or for a timer
the worker's own plan from the database, can have woken it that fast.

- a child's end, in one process, wakes its parent on a `flowmetal worker` in another;
- a deferred effect completed by `complete_effect` in another process (python -c);
- a `sleep("5s")` timer resumes on time on a worker that did not start the run (its first
  worker was SIGKILLed while the run slept).

The signal case is tests/test_postgres_e2e.py::test_a_signal_wakes_a_run_on_another_worker_
within_a_second_by_notify. Each workflow's effect right after the wake is `now()`: its journaled
time, minus the moment of the waking event (from the database), is the wake-up latency.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_for

pytestmark = pytest.mark.postgres

SLOW_POLL = {"FLOWMETAL_POLL": "30"}
LATENCY = 1.0  # seconds: the bound


# Another worker process, as a second machine would run one: it executes the one run RUN_ID
# (the engine's Worker scoped to it) until that run suspends or ends, then exits.
ONE_RUN = """
import sys
from flowmetal.clock import SYSTEM
from flowmetal.engine.worker import Worker
from flowmetal.store.postgres import PostgresStore

url, run_id = sys.argv[1:]
store = PostgresStore(url, pool_size=2)
events = []
w = Worker(store, SYSTEM, concurrency=1, run_id=run_id, on_event=lambda kind, run, *a: events.append(kind))
w.run_forever(until=lambda: "end" in events and not w.active)
w.shutdown()
store.close()
print(",".join(events))
"""

COMPLETE = """
import json, sys
from flowmetal.engine.deferred import complete_effect
from flowmetal.store.postgres import PostgresStore

url, run_id, seq, payload = sys.argv[1:]
store = PostgresStore(url, pool_size=1)
print(complete_effect(store, run_id, int(seq), result=json.loads(payload)).outcome)
store.close()
"""


def _python(pg, script, *args, timeout=60):
    r = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=pg.env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _idle_worker(pg):
    """A `flowmetal worker` with the 30 s poll, up and registered (so listening once idle)."""
    w = pg.spawn("worker", env=SLOW_POLL)
    wait_for(lambda: any(r["pid"] == w.pid for r in json.loads(pg("workers", "--json").stdout or "[]"))
             or w.poll() is not None, what="the worker to register")
    assert w.poll() is None, w.err()
    time.sleep(0.5)  # its first look at the tables is over: it waits
    return w


def _stop(w):
    w.send_signal(signal.SIGTERM)
    assert w.wait(20) == 0, w.err()


PARENT = """
def child():
    sh("sleep 1.5")
    return 7

def main():
    r = wait(spawn(child))
    return {"child": r.value, "t": now()}
"""


def test_a_childs_end_in_one_process_wakes_its_parent_on_another_worker(pg):
    pg.write("p.star", PARENT)
    parent = pg("start", "p.star").stdout.strip()
    assert _python(pg, ONE_RUN, pg.url, parent) == "start,end"  # process C: the parent spawns and waits
    assert pg.run_row(parent)["state"] == "waiting"
    [child] = pg.store().list_runs(parent_id=parent)
    assert child["state"] == "pending"
    # process D takes the child (its sh sleeps 1.5 s); then the worker B starts, idle: the parent
    # waits on the child, which D holds
    d = subprocess.Popen([sys.executable, "-c", ONE_RUN, pg.url, child["id"]], env=pg.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pg.wait_state(child["id"], "running")
        b = _idle_worker(pg)
        assert pg.run_row(child["id"])["state"] == "running", "the child ended before B listened: inconclusive"
        out, err = d.communicate(timeout=60)
        assert d.returncode == 0 and out.strip() == "start,end", err
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    ended = pg.run_row(child["id"])
    assert ended["state"] == "completed" and ended["result"] == "7"
    row = pg.wait_state(parent, "completed", timeout=10)
    value = json.loads(row["result"])
    latency = value["t"] - ended["ended_at"]
    print(f"child's end -> parent's next effect on another worker: {latency:.3f}s")
    assert value["child"] == 7 and 0 < latency < LATENCY, latency
    assert row["executions"] == 2  # C ran it to its wait, B (the only other claimant) finished it
    _stop(b)


TASK = """
def main():
    v = task("build", {"n": 1})
    return {"v": v, "t": now()}
"""


def test_a_deferred_completion_from_another_process_wakes_the_run(pg):
    pg.write("t.star", TASK)
    b = _idle_worker(pg)
    run_id = pg("start", "t.star").stdout.strip()
    row = pg.wait_state(run_id, "waiting")
    assert json.loads(row["waiting_for"])["kind"] == "effect" and row["wake_at"] is None  # no timer to wake it
    time.sleep(0.5)  # B is back to waiting (30 s)
    assert _python(pg, COMPLETE, pg.url, run_id, 1, '{"built": true}') == "completed"
    done = pg.wait_state(run_id, "completed", timeout=10)
    completed_at = pg.store().get_deferred(run_id, 1)["completed_at"]
    value = json.loads(done["result"])
    latency = value["t"] - completed_at
    print(f"complete_effect in another process -> the run's next effect: {latency:.3f}s")
    assert value["v"] == {"built": True} and 0 < latency < LATENCY, latency
    _stop(b)


NAP = 'def main():\n    sleep("5s")\n    return now()\n'


def test_a_due_timer_resumes_on_time_on_a_worker_that_did_not_start_the_run(pg):
    pg.write("nap.star", NAP)
    run_id = pg("start", "nap.star").stdout.strip()
    a = pg.spawn("worker", env=SLOW_POLL)
    row = pg.wait_state(run_id, "waiting")
    due = row["wake_at"]
    os.killpg(a.pid, signal.SIGKILL)  # the worker that started it is gone
    a.wait()
    b = _idle_worker(pg)
    assert time.time() < due - 0.5, "B started after the timer was due: inconclusive (machine too slow)"
    assert pg.run_row(run_id)["state"] == "waiting"
    done = pg.wait_state(run_id, "completed", timeout=15)
    resumed = json.loads(done["result"])
    print(f"timer due -> the run's next effect on another worker: {resumed - due:.3f}s")
    assert 0 <= resumed - due < LATENCY, resumed - due
    assert done["executions"] == 2
    assert [e["builtin"] for e in pg.journal(run_id)] == ["sleep", "now"]
    _stop(b)
