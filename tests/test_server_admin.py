"""`flowmetal serve`'s admin routes (schedules' pause, resume and trigger; tokens), fork and
retry over HTTP, and the task-queue metrics: a real server process, real clients (httpx, curl)."""

import json
import re
import subprocess
import time

import pytest

from serverutil import Served, workspace

pytestmark = pytest.mark.timeout(120)

JOBS = """
def job():
    log("job ran")
    return "tick"

schedule(name = "nightly", cron = "0 3 * * *", run = job)
schedule(name = "off", cron = "0 4 * * *", run = job, enabled = False)
"""

BUGGY = """\
def main(out):
    lines = []
    for i in range(3):
        sh("echo step%d >> " % i + out)
        lines.append("step%d" % i)
    return lines[3]
"""

QUEUED = """
def main(n):
    return task("metrics-q", {"n": n})
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root, db = workspace(tmp_path_factory.mktemp("admin"), {"jobs.star": JOBS, "wf.star": BUGGY,
                                                           "queued.star": QUEUED})
    s = Served(root, db, ".")
    s.tokens = {scope: s.token(scope, scope) for scope in ("read", "write", "admin")}
    s.start()
    with s.client(s.tokens["admin"]) as c:  # the embedded scheduler loads jobs.star
        end = time.time() + 20
        while time.time() < end:
            names = {x["name"]: x["status"] for x in c.get("/api/v1/schedules").json()["schedules"]}
            if names.get("nightly") == "active":
                break
            time.sleep(0.05)
        assert names.get("nightly") == "active", names
    yield s
    s.kill()


@pytest.fixture(scope="module")
def admin(srv):
    with srv.client(srv.tokens["admin"]) as c:
        yield c


@pytest.fixture(scope="module")
def w(srv):
    with srv.client(srv.tokens["write"]) as c:
        yield c


def curl(*args):
    out = subprocess.run(["curl", "-s", "-S", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def as_admin(srv):
    return ["-H", f"Authorization: Bearer {srv.tokens['admin']}"]


def count_runs(srv):
    return srv.rows("SELECT count(*) FROM runs")[0][0]


def listed(srv, name):
    r = srv.cli("schedule", "--list", "--json")
    assert r.returncode == 0, r.stderr
    return next(x for x in json.loads(r.stdout) if x["name"] == name)


# --- schedules ----------------------------------------------------------------------------


def test_pause_with_curl_then_resume_with_httpx(srv, admin):
    code, body = curl("-X", "POST", *as_admin(srv), f"{srv.url}/api/v1/schedules/nightly/pause")
    assert code == 200, body
    doc = json.loads(body)
    assert (doc["name"], doc["status"], doc["changed"]) == ("nightly", "paused", True)
    assert listed(srv, "nightly")["status"] == "paused"
    text = srv.cli("schedule", "--list")
    assert text.returncode == 0 and re.search(r"nightly\b.*paused", text.stdout), text.stdout
    assert srv.rows("SELECT enabled FROM schedules WHERE name = 'nightly'") == [(0,)]
    again = admin.post("/api/v1/schedules/nightly/pause")
    assert again.status_code == 200 and again.json()["changed"] is False
    resumed = admin.post("/api/v1/schedules/nightly/resume")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["changed"]) == ("active", True)
    assert listed(srv, "nightly")["status"] == "active"
    assert admin.post("/api/v1/schedules/nightly/resume").json()["changed"] is False


def test_trigger_starts_a_run_recorded_as_a_manual_fire(srv, admin):
    n = count_runs(srv)
    code, body = curl("-X", "POST", *as_admin(srv), f"{srv.url}/api/v1/schedules/nightly/trigger")
    assert code == 201, body
    doc = json.loads(body)
    assert doc["schedule"] == "nightly" and doc["run"]["id"] == doc["run_id"]
    assert doc["run"]["schedule"] == "nightly"
    assert count_runs(srv) == n + 1
    done = admin.get(f"/api/v1/runs/{doc['run_id']}/result", params={"wait": 20})
    assert done.status_code == 200 and done.json()["result"] == "tick"  # this server's worker executed it
    fires = listed(srv, "nightly")["recent"]
    fire = next(f for f in fires if f["run_id"] == doc["run_id"])
    assert (fire["action"], fire["reason"]) == ("started", "manual")
    # a paused schedule is triggered too (a manual fire ignores the pause), via httpx
    assert admin.post("/api/v1/schedules/nightly/pause").status_code == 200
    try:
        resp = admin.post("/api/v1/schedules/nightly/trigger")
        assert resp.status_code == 201 and resp.headers["location"] == f"/api/v1/runs/{resp.json()['run_id']}"
    finally:
        admin.post("/api/v1/schedules/nightly/resume")


def test_unknown_schedule_404_disabled_409_and_nothing_changes(srv, admin):
    n = count_runs(srv)
    for action in ("pause", "resume", "trigger"):
        resp = admin.post(f"/api/v1/schedules/nope/{action}")
        assert resp.status_code == 404, resp.text
        assert set(resp.json()) == {"error"} and "no schedule named 'nope'" in resp.json()["error"]
    resp = admin.post("/api/v1/schedules/off/pause")
    assert resp.status_code == 409 and "disabled" in resp.json()["error"]
    assert count_runs(srv) == n


def test_schedule_actions_need_admin(srv):
    for scope in ("read", "write"):
        code, body = curl("-X", "POST", "-H", f"Authorization: Bearer {srv.tokens[scope]}",
                          f"{srv.url}/api/v1/schedules/nightly/pause")
        assert code == 403 and "needs admin" in json.loads(body)["error"]
    code, _ = curl("-X", "POST", f"{srv.url}/api/v1/schedules/nightly/trigger")
    assert code == 401
    assert listed(srv, "nightly")["status"] == "active"


# --- tokens --------------------------------------------------------------------------------


def test_tokens_list_create_revoke(srv, admin):
    listing = admin.get("/api/v1/tokens")
    assert listing.status_code == 200
    rows = listing.json()["tokens"]
    assert {t["name"] for t in rows} >= {"read", "write", "admin"}
    assert all(set(t) == {"name", "scope", "created_at", "last_used_at"} for t in rows)
    hashes = [h for (h,) in srv.rows("SELECT hash FROM api_tokens")]
    assert not any(h in listing.text for h in hashes)

    code, body = curl("-X", "POST", *as_admin(srv), "-H", "Content-Type: application/json",
                      "-d", '{"name": "ci", "scope": "write"}', f"{srv.url}/api/v1/tokens")
    assert code == 201, body
    made = json.loads(body)
    token = made["token"]
    assert (made["name"], made["scope"]) == ("ci", "write") and token.startswith("fm_")
    stored = srv.rows("SELECT hash FROM api_tokens WHERE name = 'ci'")[0][0]
    import hashlib
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert "token" not in json.dumps(admin.get("/api/v1/tokens").json()["tokens"]).replace('"tokens"', "")
    assert token not in admin.get("/api/v1/tokens").text

    with srv.client(token) as ci:  # the new token works, with its scope
        assert ci.post("/api/v1/runs", json={"target": "jobs.star:job"}).status_code == 201
        assert ci.get("/api/v1/tokens").status_code == 403
        dup = admin.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
        assert dup.status_code == 409 and "exists" in dup.json()["error"]
        assert srv.rows("SELECT scope FROM api_tokens WHERE name = 'ci'") == [("write",)]
        code, body = curl("-X", "DELETE", *as_admin(srv), f"{srv.url}/api/v1/tokens/ci")
        assert code == 200 and json.loads(body) == {"name": "ci", "revoked": True}
        assert ci.get("/api/v1/runs").status_code == 401
    assert admin.delete("/api/v1/tokens/ci").status_code == 404
    assert "ci" not in {t["name"] for t in admin.get("/api/v1/tokens").json()["tokens"]}


@pytest.mark.parametrize("body, status, message", [
    ({"name": "bad name!"}, 400, "token name"),
    ({"name": "x", "scope": "root"}, 400, "scope"),
    ({"name": 5}, 400, "name: expected a string"),
    ({"scope": "read"}, 400, "name"),
    ({"name": "x", "extra": 1}, 400, "unknown field"),
])
def test_bad_token_requests_are_400_and_store_nothing(srv, admin, body, status, message):
    n = srv.rows("SELECT count(*) FROM api_tokens")[0][0]
    resp = admin.post("/api/v1/tokens", json=body)
    assert resp.status_code == status and message in resp.json()["error"], resp.text
    assert srv.rows("SELECT count(*) FROM api_tokens")[0][0] == n


def test_token_routes_need_admin(srv):
    for scope in ("read", "write"):
        with srv.client(srv.tokens[scope]) as c:
            assert c.get("/api/v1/tokens").status_code == 403
            assert c.post("/api/v1/tokens", json={"name": "sneaky", "scope": "admin"}).status_code == 403
            assert c.delete("/api/v1/tokens/admin").status_code == 403
    code, _ = curl(f"{srv.url}/api/v1/tokens")
    assert code == 401
    assert srv.rows("SELECT count(*) FROM api_tokens WHERE name = 'sneaky'")[0][0] == 0


# --- fork and retry --------------------------------------------------------------------------


def failed_run(srv, w, side):
    resp = w.post("/api/v1/runs", json={"target": "wf.star:main", "args": {"out": str(side)}})
    assert resp.status_code == 201, resp.text
    done = w.get(f"/api/v1/runs/{resp.json()['id']}/result", params={"wait": 30})
    assert done.status_code == 200 and done.json()["state"] == "failed", done.text
    return resp.json()["id"]


def test_retry_over_http_completes_a_run_fixed_on_disk(srv, w, tmp_path):
    side = tmp_path / "side.txt"
    old = failed_run(srv, w, side)
    assert side.read_text() == "step0\nstep1\nstep2\n"
    (srv.root / "wf.star").write_text(BUGGY.replace("lines[3]", "lines[2]"))  # the fix
    try:
        code, body = curl("-X", "POST", "-H", f"Authorization: Bearer {srv.tokens['write']}",
                          f"{srv.url}/api/v1/runs/{old}/retry")
        assert code == 201, body
        new = json.loads(body)
        assert (new["forked_from"], new["forked_at"], new["state"]) == (old, 3, "pending")
        done = w.get(f"/api/v1/runs/{new['id']}/result", params={"wait": 30})
        assert done.status_code == 200 and done.json()["state"] == "completed", done.text
        assert done.json()["result"] == "step2"
        assert side.read_text() == "step0\nstep1\nstep2\n"  # no effect of the prefix performed again
        assert srv.rows("SELECT state FROM runs WHERE id = ?", (old,)) == [("failed",)]
        again = w.post(f"/api/v1/runs/{new['id']}/retry")
        assert again.status_code == 409 and "not failed" in again.json()["error"]
    finally:
        (srv.root / "wf.star").write_text(BUGGY)


def test_fork_that_diverges_is_409_and_creates_nothing(srv, w, tmp_path):
    side = tmp_path / "side.txt"
    old = failed_run(srv, w, side)
    (srv.root / "wf.star").write_text(BUGGY.replace('"echo step%d >> "', '"echo STEP%d >> "'))
    try:
        n = count_runs(srv)
        resp = w.post(f"/api/v1/runs/{old}/fork", json={"at": 2, "current": True})
        assert resp.status_code == 409, resp.text
        error = resp.json()["error"]
        assert f"cannot fork run {old} at 2" in error and "position 1" in error
        assert f'recorded sh({{"cmd":"echo step0 >> {side}"}})' in error
        assert f'called sh({{"cmd":"echo STEP0 >> {side}"}})' in error
        assert count_runs(srv) == n
        # the pinned code replays: a fork at 1 on it is made and completes up to its own bug
        code, body = curl("-X", "POST", "-H", f"Authorization: Bearer {srv.tokens['write']}",
                          "-H", "Content-Type: application/json", "-d", '{"at": 1}', f"{srv.url}/api/v1/runs/{old}/fork")
        assert code == 201, body
        fork = json.loads(body)
        assert (fork["forked_from"], fork["forked_at"]) == (old, 1)
        done = w.get(f"/api/v1/runs/{fork['id']}/result", params={"wait": 30}).json()
        assert done["state"] == "failed" and "wf.star:6:12" in done["error"]
        assert side.read_text() == "step0\nstep1\nstep2\nstep1\nstep2\n"  # step0 was not performed again
        assert count_runs(srv) == n + 1
    finally:
        (srv.root / "wf.star").write_text(BUGGY)


@pytest.mark.parametrize("body, message", [
    ("{nope", "not valid JSON"),
    ("", "empty"),
    ('{"current": true}', "at: expected"),
    ('{"at": "1"}', "at: expected"),
    ('{"at": -1}', "at: expected"),
    ('{"at": true}', "at: expected"),
    ('{"at": 1, "current": "yes"}', "current: expected"),
    ('{"at": 1, "also": 2}', "unknown field"),
    ('{"at": 99}', "journal entries"),
])
def test_bad_fork_requests_are_400(srv, w, tmp_path, body, message):
    resp = w.post("/api/v1/runs", json={"target": "jobs.star:job"})
    run_id = resp.json()["id"]
    assert w.get(f"/api/v1/runs/{run_id}/result", params={"wait": 20}).status_code == 200
    n = count_runs(srv)
    resp = w.post(f"/api/v1/runs/{run_id}/fork", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and message in resp.json()["error"], resp.text
    assert count_runs(srv) == n


def test_fork_and_retry_of_an_unknown_run_404_and_need_write(srv, w):
    n = count_runs(srv)
    assert w.post("/api/v1/runs/zzzzzzzz/fork", json={"at": 0}).json() == {"error": "no run 'zzzzzzzz'"}
    resp = w.post("/api/v1/runs/zzzzzzzz/retry")
    assert resp.status_code == 404 and resp.json() == {"error": "no run 'zzzzzzzz'"}
    with srv.client(srv.tokens["read"]) as r:
        assert r.post("/api/v1/runs/zzzzzzzz/fork", json={"at": 0}).status_code == 403
        assert r.post("/api/v1/runs/zzzzzzzz/retry").status_code == 403
    code, _ = curl("-X", "POST", f"{srv.url}/api/v1/runs/zzzzzzzz/retry")
    assert code == 401
    assert w.post("/api/v1/runs/zzzzzzzz/retry", json={"x": 1}).status_code == 400
    assert count_runs(srv) == n


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_show_task_queue_depth_and_age(srv, w):
    ids = [w.post("/api/v1/runs", json={"target": "queued.star:main", "args": {"n": i}}).json()["id"]
           for i in range(3)]
    end = time.time() + 20
    while time.time() < end:
        waiting = srv.rows("SELECT count(*) FROM deferred WHERE queue = 'metrics-q' AND state = 'waiting'")[0][0]
        if waiting == 3:
            break
        time.sleep(0.05)
    assert waiting == 3
    time.sleep(1.1)
    text = w.get("/metrics").text
    assert 'flowmetal_task_queue_depth{queue="metrics-q"} 3.0' in text
    assert 'flowmetal_task_queue_leased{queue="metrics-q"} 0.0' in text
    age = float(text.split('flowmetal_task_queue_oldest_age_seconds{queue="metrics-q"} ')[1].split()[0])
    assert 1.0 <= age < 60
    # every metric family the issue names is there
    for family in ("flowmetal_runs{", "flowmetal_journal_entries{", "flowmetal_api_requests_total{",
                   "flowmetal_api_request_seconds_bucket{", "# TYPE flowmetal_schedule_fire_lag_seconds gauge"):
        assert family in text, family
    assert 'flowmetal_journal_entries{builtin="task",status="started"}' in text
    # a claimed task counts as leased; once done, the queue has no series
    claimed = w.post("/api/v1/tasks/claim", json={"queues": ["metrics-q"], "lease": 30})
    assert claimed.status_code == 200 and len(claimed.json()["tasks"]) == 1, claimed.text
    assert 'flowmetal_task_queue_leased{queue="metrics-q"} 1.0' in w.get("/metrics").text
    for run_id in ids:
        assert w.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    text = w.get("/metrics").text
    assert 'queue="metrics-q"' not in text


# --- schemathesis on the admin routes, with an admin token ------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_schemathesis_on_the_admin_routes(tmp_path):
    """tests/test_server_schemathesis.py fuzzes with a write token, which the admin routes refuse
    (403); this runs the same checks on them with an admin token."""
    import shutil

    st = shutil.which("st") or shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    root, db = workspace(tmp_path, {"jobs.star": JOBS})
    s = Served(root, db, ".")
    token = s.token("fuzz-admin-0", "admin")
    s.start()
    try:
        out = subprocess.run(
            [st, "run", f"{s.url}/api/v1/openapi.json", "-H", f"Authorization: Bearer {token}",
             "--include-tag", "schedules", "--include-tag", "tokens",
             "--max-examples", "25", "--generation-deterministic", "--phases", "examples,coverage,fuzzing",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance,response_headers_conformance,negative_data_rejection",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=160, cwd=tmp_path)
        report = out.stdout + out.stderr
        assert out.returncode == 0, report[-6000:]
        assert "Tested: 7" in report  # pause, resume, trigger, GET /schedules and the three token routes
        assert "Traceback" not in s.err() and "internal error" not in s.err()
    finally:
        assert s.stop() == 0
