"""`flowmetal serve` as a process: start-up messages and refusals, the scheduler's
schedules over HTTP, --no-worker, and the SIGTERM drain."""

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from serverutil import Served, workspace

pytestmark = pytest.mark.timeout(120)

FLOWS = """
def slow():
    r = sh("sleep 1.5; echo done")
    return r.stdout.strip()

def waits():
    return wait_signal("go")

def main():
    return 1

schedule(name = "hourly-main", cron = "0 * * * *", run = main)
"""


def test_first_serve_without_tokens_says_how_to_make_one(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db).start()
    try:
        assert "no API token exists yet" in s.err() and "flowmetal token create NAME --scope admin" in s.err()
        assert "fm_" not in s.err()  # no token is made and logged behind the user's back
        assert httpx.get(f"{s.url}/api/v1/runs").status_code == 401
        assert s.rows("SELECT count(*) FROM api_tokens")[0][0] == 0
    finally:
        assert s.stop() == 0


def test_refusals_exit_2_with_one_line(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db)
    r = s.cli("serve", "--listen", "0.0.0.0:0", timeout=30)
    assert r.returncode == 2 and "--allow-remote" in r.stderr and "Traceback" not in r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        r = s.cli("serve", "--listen", f"127.0.0.1:{busy.getsockname()[1]}", timeout=30)
        assert r.returncode == 2 and "cannot listen on" in r.stderr and "Traceback" not in r.stderr
    finally:
        busy.close()
    r = s.cli("serve", "--listen", "nonsense", timeout=30)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    r = s.cli("token", "create", "x", "--scope", "root")
    assert r.returncode == 2
    assert s.cli("token", "create", "dup").returncode == 0
    r = s.cli("token", "create", "dup")
    assert r.returncode == 2 and "exists" in r.stderr
    r = s.cli("token", "revoke", "nobody")
    assert r.returncode == 2 and "no token named" in r.stderr


def test_schedules_are_listed_and_no_worker_leaves_runs_queued(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db, "--no-worker")
    token = s.token("ops", "write")
    s.start()
    try:
        with s.client(token) as c:
            doc = c.get("/api/v1/schedules").json()
            for _ in range(100):
                if doc["schedules"]:
                    break
                time.sleep(0.05)
                doc = c.get("/api/v1/schedules").json()
            [sched] = doc["schedules"]
            assert sched["name"] == "hourly-main" and sched["status"] == "active" and len(sched["next"]) == 3
            cli = json.loads(s.cli("schedule", "flows.star", "--list", "--json").stdout)
            assert [x["name"] for x in cli] == ["hourly-main"]
            run = c.post("/api/v1/runs", json={"target": "flows.star:main"}).json()
            time.sleep(1.0)
            assert c.get(f"/api/v1/runs/{run['id']}").json()["state"] == "pending"
            assert c.get("/healthz").json() == {"status": "ok", "worker": False, "scheduler": True}
    finally:
        assert s.stop() == 0


def test_sigterm_drains_requests_and_effects_then_exits_0(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db, "--no-scheduler", "--grace", "8s")
    token = s.token("ops", "write")
    s.start()
    with s.client(token) as c:
        slow = c.post("/api/v1/runs", json={"target": "flows.star:slow"}).json()
        waiting = c.post("/api/v1/runs", json={"target": "flows.star:waits"}).json()
        for _ in range(200):
            states = dict(s.rows("SELECT id, state FROM runs"))
            if states[slow["id"]] == "running" and states[waiting["id"]] == "waiting" and \
                    s.rows("SELECT count(*) FROM journal WHERE builtin = 'sh'")[0][0]:
                break
            time.sleep(0.02)
        box = {}

        def long_poll():  # in flight when SIGTERM comes: it must be answered, not cut off
            with s.client(token) as c2:
                box["resp"] = c2.get(f"/api/v1/runs/{waiting['id']}/result", params={"wait": 30})

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(20)
        took = time.monotonic() - t0
        poller.join(10)
    assert code == 0, s.err()
    assert took < 8, took
    assert box["resp"].status_code == 202 and box["resp"].json()["state"] == "waiting"
    [(status, result)] = s.rows("SELECT status, result FROM journal WHERE run_id = ? AND builtin = 'sh'",
                                (slow["id"],))
    assert status == "completed" and "done" in result  # the effect in flight finished and was recorded
    assert "stopping: no new requests" in s.err() and "Traceback" not in s.err()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/healthz")
    # the run that was interrupted between effects is resumable by the next server
    s2 = Served(root, db, "--no-scheduler").start()
    try:
        with s2.client(token) as c:
            done = c.get(f"/api/v1/runs/{slow['id']}/result", params={"wait": 30})
            assert done.status_code == 200 and done.json()["result"] == "done"
    finally:
        assert s2.stop() == 0


@pytest.mark.parametrize("args", [(), ("--no-scheduler",)], ids=["with-scheduler", "worker-only"])
def test_the_servers_worker_is_listed_by_flowmetal_workers_until_it_stops(tmp_path, args):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db, *args)
    s.start()
    try:
        for _ in range(100):
            listed = json.loads(s.cli("workers", "--json").stdout)
            if listed:
                break
            time.sleep(0.05)
        [w] = listed
        assert w["status"] == "live" and w["pid"] == s.proc.pid, w
    finally:
        assert s.stop() == 0
    after = json.loads(s.cli("workers", "--json").stdout or "[]")
    assert after and all(w["status"] == "stopped" for w in after), after  # it drained and said so


def test_worker_warm_option(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db)
    r = s.cli("worker", "--warm", "-1", "--until-idle")
    assert r.returncode == 2 and "--warm" in r.stderr and "Traceback" not in r.stderr
    s.cli("start", "flows.star:main")
    r = s.cli("worker", "--warm", "0", "--until-idle")
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stderr
