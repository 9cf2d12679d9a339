"""Issue 13's acceptance for outside workers: two `examples/workers/worker.sh` and one
`examples/workers/worker.py` drain 200 tasks of 20 runs from a real `flowmetal serve`; one
worker is SIGKILLed in the middle of a task. Every run completes with the right result;
every task's side effect happened once, except the task in flight at the kill, which is
offered again once its lease lapses (its 5 s heartbeat interval, chosen with room for a loaded machine: a worker heartbeats every third of it) and whose journal entry says
re-executed (attempts 2); no other task ran twice.

The work is observable: each task appends "<idempotency key> <worker>" to a file (the
side effect), sleeps as its payload says, and answers twice its number. One task of one
run sleeps long enough for the test to see its line and kill the worker doing it.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from serverutil import Served, workspace

WORKERS = Path(__file__).resolve().parent.parent / "examples" / "workers"
RUNS, TASKS, SLOW_RUN, SLOW_TASK = 20, 10, 7, 4

FLOWS = """
def main(run, n, slow = -1):
    total = 0
    for i in range(n):
        r = task("work", {"run": run, "i": i, "sleep": 30 if i == slow else 0}, heartbeat = "5s")
        total += r["twice"]
    return {"run": run, "total": total}
"""

# The work: one line of side effect, then the payload's sleep, then the answer (JSON).
WORK = """#!/bin/sh
set -e
eval "$(jq -r '@sh "i=\\(.i) s=\\(.sleep)"')"
echo "$FLOWMETAL_IDEMPOTENCY_KEY $WORKER_NAME $FLOWMETAL_TASK_ATTEMPT" >> "$EFFECTS"
[ "$s" = 0 ] || [ "$FLOWMETAL_TASK_ATTEMPT" != 1 ] || sleep "$s"
echo "{\\"twice\\": $((i * 2))}"
"""


def _effects(path):
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_three_workers_drain_200_tasks_and_a_killed_workers_task_is_offered_again(tmp_path):
    t0 = time.monotonic()
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    work = tmp_path / "work.sh"
    work.write_text(WORK)
    work.chmod(0o755)
    effects = tmp_path / "effects.log"
    srv = Served(root, db).start()
    workers = {}
    try:
        token = srv.token("workers", "write")
        env = {**srv.env, "FLOWMETAL_URL": srv.url, "FLOWMETAL_TOKEN": token, "EFFECTS": str(effects)}
        commands = {"sh1": [str(WORKERS / "worker.sh"), "work", str(work)],
                    "sh2": [str(WORKERS / "worker.sh"), "work", str(work)],
                    "py1": [sys.executable, str(WORKERS / "worker.py"), "work", str(work)]}
        for name, cmd in commands.items():
            workers[name] = subprocess.Popen(cmd, env={**env, "WORKER_NAME": name, "FLOWMETAL_WORKER": name},
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
        c = srv.client(token)
        run_ids = []
        for r in range(RUNS):
            args = {"run": r, "n": TASKS, **({"slow": SLOW_TASK} if r == SLOW_RUN else {})}
            resp = c.post("/api/v1/runs", json={"target": "flows.star:main", "args": args})
            assert resp.status_code == 201, resp.text
            run_ids.append(resp.json()["id"])
        slow_key = f"{run_ids[SLOW_RUN]}:{SLOW_TASK + 1}"  # (task i is journal entry i + 1)

        # The slow task is in flight: its side effect is there, its answer not yet. Kill its worker.
        line = wait_for(lambda: next((e for e in _effects(effects) if e[0] == slow_key), None), timeout=40,
                        what="the slow task's side effect")
        victim = line[1]
        os.killpg(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait()

        for run_id in run_ids:
            r = c.get(f"/api/v1/runs/{run_id}/result", params={"wait": 40}, timeout=60)
            assert r.status_code == 200 and r.json()["state"] == "completed", r.text
        expected = [{"run": r, "total": sum(2 * i for i in range(TASKS))} for r in range(RUNS)]
        assert [c.get(f"/api/v1/runs/{run_id}").json()["result"] for run_id in run_ids] == expected

        # Side effects: once each, but the killed task's twice, by two different workers.
        lines = _effects(effects)
        counts = collections.Counter(e[0] for e in lines)
        assert len(counts) == RUNS * TASKS
        assert {k: n for k, n in counts.items() if n != 1} == {slow_key: 2}
        redo = [e for e in lines if e[0] == slow_key]
        assert [e[2] for e in redo] == ["1", "2"] and redo[0][1] == victim and redo[1][1] != victim
        assert len({e[1] for e in lines}) == 3  # every worker did some of the work

        # The journal (GET /runs/{id}, as `flowmetal show --json`): only the killed task re-executed.
        for run_id in run_ids:
            doc = c.get(f"/api/v1/runs/{run_id}").json()
            entries = [e for e in doc["journal"] if e["builtin"] == "task"]
            assert len(entries) == TASKS
            for e in entries:
                key = f"{run_id}:{e['seq']}"
                again = key == slow_key
                assert e["status"] == "completed" and e["result"]["ok"], e
                assert (e["reexecuted"], e["result"]["attempts"]) == ((1, 2) if again else (0, 1)), (key, e)
        rows = srv.rows("SELECT run_id || ':' || seq, attempts, lost, worker FROM deferred WHERE lost > 0 "
                        "OR attempts != 1")
        assert [(k, a, lost) for k, a, lost, _ in rows] == [(slow_key, 2, 1)] and rows[0][3] != victim
        cli = json.loads(srv.cli("show", run_ids[SLOW_RUN], "--json").stdout)
        assert [e["reexecuted"] for e in cli["journal"] if e["builtin"] == "task"].count(1) == 1
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        srv.kill()
    assert time.monotonic() - t0 < 90
