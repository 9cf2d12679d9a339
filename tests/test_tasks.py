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

def beating():
    r = task("beat", 1, heartbeat = "1s", check = False)
    return [r.ok, r.value, r.attempts]

def again():
    r = task("again", 1, retry = retry_policy(attempts = 2, initial = "1s", jitter = False), check = False)
    return [r.ok, r.value, r.attempts]

def retried(check):
    r = task("retry", 1, retry = retry_policy(attempts = 3, initial = "1s", jitter = False), check = check)
    return [r.ok, r.value, r.error, r.attempts] if not check else r
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
        r = c.post("/api/v1/tasks/claim", json={"worker": "w1", "queues": ["other", "build"], "wait": 20})
        got["at"], got["r"] = time.time(), r

    t = threading.Thread(target=claim)
    t.start()
    time.sleep(0.5)  # the claim is waiting
    run_id = srv.cli("start", "flows.star:build", "--arg", "commit=abc").stdout.strip()
    t.join(30)
    r = got["r"]
    assert r.status_code == 200, r.text
    [task] = r.json()["tasks"]
    assert task["id"] == task["idempotency_key"] == f"{run_id}:1" and task["queue"] == "build"
    assert task["payload"] == {"commit": "abc"} and task["attempt"] == 1 and task["heartbeat"] is None
    [(created, worker)] = srv.rows("SELECT created_at, worker FROM deferred WHERE run_id = ?", (run_id,))
    assert got["at"] - created < 0.1 + 0.05  # (plus the client's own clock reading)
    assert worker == "w1" and task["lease_until"] - created == pytest.approx(60, abs=2)
    assert task["lease_token"] not in json.dumps(srv.rows("SELECT * FROM deferred"))  # only its hash is stored
    base = f"/api/v1/tasks/{task['id']}"
    token = {"lease_token": task["lease_token"]}
    r = c.post(base + "/heartbeat", json=token)
    assert r.status_code == 200 and r.json()["lease_until"] >= task["lease_until"]
    assert c.post(base + "/heartbeat", json={"lease_token": "wrong"}).status_code == 409
    assert c.post(base + "/heartbeat", json={}).status_code == 400
    assert c.post(base + "/complete", json={"lease_token": "wrong", "result": 1}).status_code == 409
    r = c.post(base + "/complete", json={**token, "result": {"artifact": "a.tar"}})
    assert r.status_code == 200 and r.json()["outcome"] == "completed"
    assert c.post(base + "/complete", json={**token, "result": {"artifact": "a.tar"}}).status_code == 200
    assert c.post(base + "/complete", json={**token, "result": 2}).status_code == 409
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    assert _state(srv, run_id)["result"] == {"built": {"artifact": "a.tar"}}
    r = c.post("/api/v1/tasks/claim", json={"queues": ["build"]})
    assert r.status_code == 204  # nothing left, and no wait asked
    assert srv.client().post("/api/v1/tasks/claim", json={"queues": ["build"]}).status_code == 401
    for bad in ({"queue": "build"}, {"queues": []}, {"queues": ["b"], "max": 0}, {"queues": ["b"], "wait": 61},
                {"queues": ["b"], "lease": 0.5}, {"queues": [1]}):
        r = c.post("/api/v1/tasks/claim", json=bad)
        assert r.status_code == 400 and "error" in r.json(), (bad, r.text)


def test_an_expired_lease_offers_the_task_again_and_fencing_the_old_worker(srv):
    c = srv.client(srv.tok)
    run_id = srv.cli("start", "flows.star:flaky").stdout.strip()
    [first] = c.post("/api/v1/tasks/claim", json={"queues": ["flaky"], "wait": 20, "lease": 1}).json()["tasks"]
    assert c.post("/api/v1/tasks/claim", json={"queues": ["flaky"]}).status_code == 204  # leased
    t0 = time.monotonic()
    [second] = c.post("/api/v1/tasks/claim", json={"queues": ["flaky"], "wait": 5}).json()["tasks"]
    assert time.monotonic() - t0 < 1 + 1.5  # the waiting claim saw the lease expire (it looks every second)
    assert second["id"] == first["id"] == f"{run_id}:1" and second["attempt"] == 2
    assert second["lease_token"] != first["lease_token"]
    base = f"/api/v1/tasks/{first['id']}"
    assert c.post(base + "/fail", json={"lease_token": first["lease_token"], "error": "old"}).status_code == 409
    r = c.post(base + "/fail", json={"lease_token": second["lease_token"], "error": "disk full", "retryable": True})
    assert r.status_code == 200 and r.json()["outcome"] == "failed", r.text  # no retry policy: it ends here
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    doc = _state(srv, run_id)
    assert doc["result"] == "disk full"
    [entry] = [e for e in doc["journal"] if e["builtin"] == "task"]
    assert entry["reexecuted"] == 1 and entry["result"]["attempts"] == 2  # the first lease was lost
    assert c.post("/api/v1/tasks/nope:1/complete", json={"lease_token": "x", "result": 1}).status_code == 404


def test_a_task_whose_worker_stops_heartbeating_is_offered_again_within_the_interval(srv):
    c = srv.client(srv.tok)
    run_id = srv.cli("start", "flows.star:beating").stdout.strip()
    [first] = c.post("/api/v1/tasks/claim", json={"queues": ["beat"], "wait": 20, "lease": 600}).json()["tasks"]
    assert first["heartbeat"] == 1.0 and first["lease_until"] - time.time() <= 1.05  # capped by the interval
    base = f"/api/v1/tasks/{first['id']}"
    for _ in range(3):  # heartbeats keep it: no one else gets it meanwhile
        time.sleep(0.5)
        r = c.post(base + "/heartbeat", json={"lease_token": first["lease_token"], "lease": 600})
        assert r.status_code == 200 and r.json()["lease_until"] - time.time() <= 1.05
        assert c.post("/api/v1/tasks/claim", json={"queues": ["beat"]}).status_code == 204
    # the worker goes silent: within the interval (plus the claim's recheck) another claim gets it
    [second] = c.post("/api/v1/tasks/claim", json={"queues": ["beat"], "wait": 5}).json()["tasks"]
    assert second["attempt"] == 2
    assert c.post(base + "/heartbeat", json={"lease_token": first["lease_token"]}).status_code == 409
    assert c.post(base + "/complete", json={"lease_token": second["lease_token"], "result": "ok"}).status_code == 200
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    assert _state(srv, run_id)["result"] == [True, "ok", 2]


def _claim(c, queue, wait=10):
    r = c.post("/api/v1/tasks/claim", json={"queues": [queue], "wait": wait})
    assert r.status_code == 200, r.text
    return r.json()["tasks"][0]


def test_retryable_failures_are_offered_again_after_the_policys_delay_until_attempts_run_out(srv):
    c = srv.client(srv.tok)
    run_id = srv.cli("start", "flows.star:retried", "--arg", "check:=false").stdout.strip()
    seen = []
    for attempt in (1, 2, 3):
        task = _claim(c, "retry")
        seen.append(time.monotonic())
        assert task["attempt"] == attempt
        r = c.post(f"/api/v1/tasks/{task['id']}/fail",
                   json={"lease_token": task["lease_token"], "error": "busy", "retryable": True})
        assert r.status_code == 200, r.text
        if attempt < 3:
            assert r.json()["outcome"] == "retrying" and r.json()["retry_at"] > time.time()
            assert c.post("/api/v1/tasks/claim", json={"queues": ["retry"]}).status_code == 204  # not before
        else:
            assert r.json()["outcome"] == "failed"  # attempts used up
    assert seen[1] - seen[0] >= 0.9 and seen[2] - seen[1] >= 1.9  # initial 1s, backoff 2, no jitter
    wait_for(lambda: _state(srv, run_id)["state"] == "completed", what="the run's end")
    doc = _state(srv, run_id)
    assert doc["result"] == [False, None, "busy (after 3 attempts)", 3]
    [entry] = [e for e in doc["journal"] if e["builtin"] == "task"]
    assert entry["reexecuted"] == 0  # retried on the worker's word, not re-executed after a lost lease


def test_a_non_retryable_failure_ends_the_task_and_fails_the_run(srv):
    c = srv.client(srv.tok)
    run_id = srv.cli("start", "flows.star:retried", "--arg", "check:=true").stdout.strip()
    task = _claim(c, "retry")
    r = c.post(f"/api/v1/tasks/{task['id']}/fail", json={"lease_token": task["lease_token"], "error": "bad input"})
    assert r.status_code == 200 and r.json()["outcome"] == "failed"
    wait_for(lambda: _state(srv, run_id)["state"] == "failed", what="the run's failure")
    assert "task() failed: bad input" in _state(srv, run_id)["error"]
    r = c.post(f"/api/v1/tasks/{task['id']}/fail", json={"lease_token": task["lease_token"], "error": "x",
                                                         "retryable": "yes"})
    assert r.status_code == 400


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


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["worker.sh", "worker.py"])
def test_the_example_workers_pass_the_key_and_attempt_and_a_command_exiting_75_is_retried(srv, worker):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "workers" / worker
    work = ['sh', '-c', '[ "$FLOWMETAL_TASK_ATTEMPT" = 1 ] && { echo busy >&2; exit 75; }; '
                        'echo "\\"$FLOWMETAL_IDEMPOTENCY_KEY $FLOWMETAL_TASK_ATTEMPT\\""']
    cmd = [str(path), "again", *work] if worker == "worker.sh" else [sys.executable, str(path), "again", *work]
    env = {**srv.env, "FLOWMETAL_URL": srv.url, "FLOWMETAL_TOKEN": srv.tok}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        run_id = srv.cli("start", "flows.star:again").stdout.strip()
        wait_for(lambda: _state(srv, run_id)["state"] == "completed", timeout=30, what="the run's end")
        assert _state(srv, run_id)["result"] == [True, f"{run_id}:1 2", 2]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_the_compress_example_hands_its_files_to_the_example_workers(tmp_path):
    import gzip
    import hashlib
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    root, db = workspace(tmp_path, {})
    shutil.copy(repo / "examples" / "compress.star", root / "compress.star")
    data = tmp_path / "data"
    data.mkdir()
    files = []
    for i in range(4):
        path = data / f"log{i}.txt"
        path.write_text(f"line {i}: the quick brown fox jumps over the lazy dog\n" * (500 * (i + 1)))
        files.append(str(path))
    missing = str(data / "missing.txt")
    server = Served(root, db).start()
    procs = []
    try:
        tok = server.token("compressor", "write")
        env = {**server.env, "FLOWMETAL_URL": server.url, "FLOWMETAL_TOKEN": tok}
        work = str(repo / "examples" / "workers" / "compress.sh")
        for cmd in ([str(repo / "examples" / "workers" / "worker.sh"), "compress", work],
                    [sys.executable, str(repo / "examples" / "workers" / "worker.py"), "compress", work]):
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        c = server.client(tok)
        r = c.post("/api/v1/runs", json={"target": "compress.star:main", "args": {"files": files + [missing]}})
        assert r.status_code == 201, r.text
        r = c.get(f"/api/v1/runs/{r.json()['id']}/result", params={"wait": 40}, timeout=60)
        assert r.status_code == 200 and r.json()["state"] == "completed", r.text
        result = r.json()["result"]
        assert [d["path"] for d in result["compressed"]] == files
        for d in result["compressed"]:
            assert gzip.decompress(Path(d["output"]).read_bytes()) == Path(d["path"]).read_bytes()
            assert d["sha256"] == hashlib.sha256(Path(d["output"]).read_bytes()).hexdigest()
            assert d["bytes_out"] < d["bytes_in"] == os.path.getsize(d["path"]) and d["attempts"] == 1
        assert result["saved"] == sum(d["bytes_in"] - d["bytes_out"] for d in result["compressed"])
        [bad] = result["failed"]  # not retried: the file is not there (exit 2, not retryable)
        assert bad["path"] == missing and "no such file" in bad["error"] and bad["attempts"] == 1
        assert not list(data.glob("*.tmp"))
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        server.kill()


def test_the_new_arguments_leave_the_digest_of_a_call_without_them_as_it_was():
    from flowmetal.codec import canonical
    from flowmetal.engine.effects.registry import lookup, recorded_args

    eff = lookup("task")
    call = {"queue": "q", "payload": {"n": 1}, "timeout": None, "heartbeat": None, "retry": None, "check": True}
    assert canonical(recorded_args(eff, call, 2)) == canonical({"queue": "q", "payload": {"n": 1}})
    assert recorded_args(eff, {**call, "heartbeat": "1m"}, 2)["heartbeat"] == "1m"  # (given: digested)


@pytest.mark.parametrize("call, message", [
    ('task("q", 1, heartbeat = "0s")', "task(): argument heartbeat must be a duration longer than 0"),
    ('task("q", 1, heartbeat = "soon")', "task(): argument heartbeat"),
    ('task("q", 1, retry = retry_policy(retry_on = ["5xx"]))', "retry_on does not apply to a task"),
    ('task("q", 1, retry = 3)', "task(): argument retry: retry must be a retry_policy"),
])
def test_bad_heartbeat_and_retry_arguments_fail_the_run_with_a_message(fm, call, message):
    fm.write("bad.star", f"def main():\n    return {call}\n")
    r = fm("run", "bad.star")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and message in out and "bad.star:2:12" in out, out
    assert 'File "' not in out  # (Starlark's own traceback, never Python's)


def test_a_claim_takes_up_to_max_tasks_oldest_first(srv):
    c = srv.client(srv.tok)
    runs = [srv.cli("start", "flows.star:build", "--arg", f"commit=c{i}").stdout.strip() for i in range(3)]
    wait_for(lambda: len(srv.rows("SELECT 1 FROM deferred WHERE queue = 'build'")) == 3, what="three tasks")
    r = c.post("/api/v1/tasks/claim", json={"worker": "w", "queues": ["build"], "max": 2})
    assert r.status_code == 200, r.text
    got = r.json()["tasks"]
    oldest = [k for (k,) in srv.rows("SELECT run_id || ':' || seq FROM deferred ORDER BY created_at")]
    assert sorted(k.split(":")[0] for k in oldest) == sorted(runs)
    assert [t["id"] for t in got] == oldest[:2]
    assert len({t["lease_token"] for t in got}) == 2  # a lease each
    [last] = c.post("/api/v1/tasks/claim", json={"queues": ["build"], "max": 100}).json()["tasks"]
    assert last["id"] == oldest[2]
