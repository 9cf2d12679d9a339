"""task() with outside workers over HTTP: a real `flowmetal serve`, claims that long-poll,
leases, heartbeats, stale tokens, and a task offered again after its lease expired."""

import json
import threading
import time

import pytest

from conftest import wait_for
from serverutil import Served, workspace

FLOWS = """
def build(commit):
    r = task("build", {"commit": commit})
    return {"built": r}

def flaky():
    return task("flaky", 1, check = False).error
"""


@pytest.fixture
def srv(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    server = Served(root, db).start()
    server.tok = server.token("worker", "write")
    try:
        yield server
    finally:
        server.kill()


def _state(srv, run_id):
    return json.loads(srv.cli("show", run_id, "--json").stdout)


def test_a_waiting_claim_gets_a_new_task_at_once_and_completes_it(srv):
    c = srv.client(srv.tok)
    got = {}

    def claim():
        r = c.post("/api/v1/tasks/claim", json={"queue": "build", "wait": 20})
        got["at"], got["r"] = time.time(), r

    t = threading.Thread(target=claim)
    t.start()
    time.sleep(0.5)  # the claim is waiting
    run_id = srv.cli("start", "flows.star:build", "--arg", "commit=abc").stdout.strip()
    t.join(30)
    r = got["r"]
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["id"] == f"{run_id}:1" and task["payload"] == {"commit": "abc"} and task["attempt"] == 1
    [(created,)] = srv.rows("SELECT created_at FROM deferred WHERE run_id = ?", (run_id,))
    assert got["at"] - created < 0.1 + 0.05  # (plus the client's own clock reading)
    assert task["lease"] not in json.dumps(srv.rows("SELECT * FROM deferred"))  # only its hash is stored
    base = f"/api/v1/tasks/{task['id']}"
    assert c.post(base + "/heartbeat", json={"lease": task["lease"]}).status_code == 200
    assert c.post(base + "/heartbeat", json={"lease": "wrong"}).status_code == 409
    assert c.post(base + "/complete", json={"lease": "wrong", "result": 1}).status_code == 409
    r = c.post(base + "/complete", json={"lease": task["lease"], "result": {"artifact": "a.tar"}})
    assert r.status_code == 200 and r.json()["outcome"] == "completed"
    assert c.post(base + "/complete", json={"lease": task["lease"], "result": {"artifact": "a.tar"}}).status_code == 200
    assert c.post(base + "/complete", json={"lease": task["lease"], "result": 2}).status_code == 409
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    assert _state(srv, run_id)["result"] == {"built": {"artifact": "a.tar"}}
    r = c.post("/api/v1/tasks/claim", json={"queue": "build"})
    assert r.status_code == 204  # nothing left, and no wait asked
    assert srv.client().post("/api/v1/tasks/claim", json={"queue": "build"}).status_code == 401


def test_an_expired_lease_offers_the_task_again_and_fencing_the_old_worker(srv):
    c = srv.client(srv.tok)
    run_id = srv.cli("start", "flows.star:flaky").stdout.strip()
    first = c.post("/api/v1/tasks/claim", json={"queue": "flaky", "wait": 20, "lease": 1}).json()
    assert c.post("/api/v1/tasks/claim", json={"queue": "flaky"}).status_code == 204  # leased
    time.sleep(1.2)
    second = c.post("/api/v1/tasks/claim", json={"queue": "flaky", "wait": 5}).json()
    assert second["id"] == first["id"] == f"{run_id}:1" and second["attempt"] == 2
    base = f"/api/v1/tasks/{first['id']}"
    assert c.post(base + "/fail", json={"lease": first["lease"], "error": "old"}).status_code == 409
    r = c.post(base + "/fail", json={"lease": second["lease"], "error": "disk full"})
    assert r.status_code == 200, r.text
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    assert _state(srv, run_id)["result"] == "disk full"
    assert c.post("/api/v1/tasks/nope:1/complete", json={"lease": "x", "result": 1}).status_code == 404


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["worker.sh", "worker.py"])
def test_the_example_workers_complete_and_fail_tasks(srv, worker):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "workers" / worker
    env = {**srv.env, "FLOWMETAL_URL": srv.url, "FLOWMETAL_TOKEN": srv.tok}
    cmd = [str(path), "build", "sh", "-c", 'jq -c "{got: .commit}"'] if worker == "worker.sh" \
        else [sys.executable, str(path), "build"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        run_id = srv.cli("start", "flows.star:build", "--arg", "commit=abc").stdout.strip()
        wait_for(lambda: _state(srv, run_id)["state"] == "completed", timeout=30, what="the run's end")
        expected = {"got": "abc"} if worker == "worker.sh" else {"echo": {"commit": "abc"}}
        assert _state(srv, run_id)["result"] == {"built": expected}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
