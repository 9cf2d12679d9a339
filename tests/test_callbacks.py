"""callback() and wait_callback() end to end: a real `flowmetal serve`, a workflow that posts
its callback URL to a local HTTP stub, and the URL called with curl."""

import json
import signal
import subprocess

import pytest

from conftest import wait_for
from httpstub import HTTPStub, Reply
from serverutil import Served, workspace

FLOWS = """
def notify(hook, approval = False, timeout = None):
    cb = callback(name = "deploy", approval = approval, timeout = timeout)
    http(hook, method = "POST", json = {"url": cb.url, "id": cb.id})
    return {"got": wait_callback(cb), "again": cb.url}
"""


def curl(*args):
    r = subprocess.run(["curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", *args], capture_output=True,
                       text=True, timeout=30)
    return int(r.stdout), r.stderr


@pytest.fixture
def env(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    with HTTPStub() as stub:
        stub.on("/hook", Reply(200, json={"ok": True}), method="POST")
        server = Served(root, db).start()
        try:
            yield server, stub
        finally:
            server.kill()


def _start(server, stub, *extra):
    r = server.cli("start", "flows.star:notify", "--arg", f"hook={stub.url('/hook')}", *extra)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    req = wait_for(lambda: stub.requests_to("/hook"), what="the workflow's POST")[0]
    return run_id, req.json()["url"]


def _run(server, run_id):
    return server.cli("show", run_id, "--json")


def test_calling_the_url_completes_the_run_with_the_payload_once(env):
    server, stub = env
    run_id, url = _start(server, stub)
    token = url.rsplit("/", 1)[1]
    assert url.startswith(server.url + "/callbacks/") and len(token) >= 43  # 256 bits, base64url
    # the token is in the database only as a hash, and in no journal entry or log
    assert token not in subprocess.run(["sqlite3", str(server.db), ".dump"], capture_output=True, text=True).stdout
    status, body = curl(url)
    assert status == 200 and json.loads(body)["state"] == "waiting"
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '{"ok": 1}', url)
    assert status == 200, body
    status, _ = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '{"ok": 1}', url)
    assert status == 200  # the same body again
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '{"ok": 2}', url)
    assert status == 409 and "different payload" in body
    wait_for(lambda: json.loads(_run(server, run_id).stdout)["state"] == "completed", what="the run's end")
    result = json.loads(_run(server, run_id).stdout)["result"]
    # the run replayed callback() and http() after its wait (the same URL, else a divergence), and
    # the URL's token is masked in what is stored, like a secret
    assert result == {"got": {"ok": 1}, "again": server.url + "/callbacks/***"}
    assert token not in subprocess.run(["sqlite3", str(server.db), ".dump"], capture_output=True, text=True).stdout
    status, _ = curl("-X", "POST", "-d", "{}", url.rsplit("/", 1)[0] + "/" + "A" * 43)
    assert status == 404
    big = json.dumps({"x": "y" * (1024 * 1024 + 10)})
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H",
                        "Content-Type: application/json", "--data-binary", "@-", url], input=big,
                       capture_output=True, text=True, timeout=30)
    assert int(r.stdout) == 413


def test_an_approval_page_rejects_and_a_cancelled_runs_callback_is_gone(env):
    server, stub = env
    run_id, url = _start(server, stub, "--arg", "approval:=true")
    r = subprocess.run(["curl", "-s", "-H", "Accept: text/html", url], capture_output=True, text=True, timeout=30)
    assert "Approve" in r.stdout and "Reject" in r.stdout and "<form" in r.stdout
    status, _ = curl("-X", "POST", "-d", "decision=reject", url)
    assert status == 200
    wait_for(lambda: json.loads(_run(server, run_id).stdout)["state"] == "completed", what="the run's end")
    assert json.loads(_run(server, run_id).stdout)["result"]["got"] == {"approved": False}
    stub.requests.clear()
    run2, url2 = _start(server, stub)
    assert server.cli("cancel", run2).returncode == 0
    status, body = curl("-X", "POST", "-d", "{}", url2)
    assert status == 410 and "void" in body
    status, body = curl(url2)
    assert status == 200 and json.loads(body)["state"] == "void"


def test_a_callback_survives_a_killed_server(env):
    server, stub = env
    run_id, url = _start(server, stub)
    server.stop(signal.SIGKILL)
    server.start()
    token = url.rsplit("/", 1)[1]
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", '"after"',
                        f"{server.url}/callbacks/{token}")
    assert status == 200, body
    wait_for(lambda: json.loads(_run(server, run_id).stdout)["state"] == "completed", timeout=60,
             what="the run's end")
    assert json.loads(_run(server, run_id).stdout)["result"]["got"] == "after"


def test_an_expired_callback_returns_none_and_then_answers_410(env):
    server, stub = env
    run_id, url = _start(server, stub, "--arg", "timeout=1s")
    wait_for(lambda: json.loads(_run(server, run_id).stdout)["state"] == "completed", what="the run's end")
    assert json.loads(_run(server, run_id).stdout)["result"]["got"] is None
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", "1", url)
    assert status == 410 and "expired" in body
