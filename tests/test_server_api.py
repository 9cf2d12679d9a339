"""`flowmetal serve`'s runs API, against a real server process with real clients
(httpx and curl): every route and status code of SPEC section 8 for runs."""

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serverutil import Served, workspace

pytestmark = pytest.mark.timeout(120)

FLOWS = """
def main(name = "world"):
    log("hello", name)
    return "hello " + name

def waits():
    v = wait_signal("go")
    return {"got": v}

def chatty(n = 3):
    for i in range(n):
        log("line", i)
        sleep(0.4)
    return n

def parent():
    h = spawn(main, name = "child")
    return wait(h).value
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root, db = workspace(tmp_path_factory.mktemp("api"), {"flows.star": FLOWS, "broken.star": "def main(:\n"})
    s = Served(root, db, "flows.star")
    s.tokens = {scope: s.token(scope, scope) for scope in ("read", "write", "admin")}
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def w(srv):
    with srv.client(srv.tokens["write"]) as c:
        yield c


@pytest.fixture(scope="module")
def r(srv):
    with srv.client(srv.tokens["read"]) as c:
        yield c


def count_runs(srv):
    return srv.rows("SELECT count(*) FROM runs")[0][0]


def start(w, target="flows.star:main", **body):
    resp = w.post("/api/v1/runs", json={"target": target, **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def curl(*args):
    out = subprocess.run(["curl", "-s", "-S", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


# --- authentication -------------------------------------------------------------


def test_tokens_401_403_and_open_health(srv, r):
    code, body = curl(f"{srv.url}/api/v1/runs")
    assert code == 401 and "Bearer" in json.loads(body)["error"]
    code, body = curl("-H", "Authorization: Bearer fm_abcdefgh_" + "x" * 43, f"{srv.url}/api/v1/runs")
    assert code == 401 and json.loads(body) == {"error": "invalid or revoked token"}
    code, _ = curl("-H", "Authorization: Basic dXNlcjpwdw==", f"{srv.url}/api/v1/runs")
    assert code == 401
    # a real token with one character changed
    bad = srv.tokens["admin"][:-1] + ("A" if srv.tokens["admin"][-1] != "A" else "B")
    code, _ = curl("-H", f"Authorization: Bearer {bad}", f"{srv.url}/api/v1/runs")
    assert code == 401
    n = count_runs(srv)
    resp = r.post("/api/v1/runs", json={"target": "flows.star:main"})
    assert resp.status_code == 403 and "needs write" in resp.json()["error"]
    assert count_runs(srv) == n
    assert r.get("/api/v1/runs").status_code == 200
    code, body = curl(f"{srv.url}/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    assert httpx.get(f"{srv.url}/metrics").status_code == 401


def test_a_revoked_token_gets_401(srv):
    token = srv.token("temp", "read")
    with srv.client(token) as c:
        assert c.get("/api/v1/runs").status_code == 200
        assert srv.cli("token", "revoke", "temp").returncode == 0
        assert c.get("/api/v1/runs").status_code == 401
    listing = srv.cli("token", "list", "--json")
    names = [t["name"] for t in json.loads(listing.stdout)]
    assert "temp" not in names and {"read", "write", "admin"} <= set(names)
    assert all(t.startswith("fm_") is False for t in listing.stdout.split())  # no token is ever listed
    rows = srv.rows("SELECT hash FROM api_tokens")
    assert all(len(h) == 64 for (h,) in rows)
    assert not any(token in h for (h,) in rows)


# --- POST /runs --------------------------------------------------------------------


def test_start_a_run_with_curl_and_wait_for_its_result(srv):
    auth = ["-H", f"Authorization: Bearer {srv.tokens['write']}"]
    code, body = curl(*auth, "-H", "Content-Type: application/json", "-d",
                      '{"target": "flows.star:main", "args": {"name": "curl"}}', f"{srv.url}/api/v1/runs")
    assert code == 201, body
    run = json.loads(body)
    assert run["state"] == "pending" and run["args"] == {"name": "curl"} and run["file"] == "flows.star"
    code, body = curl(*auth, f"{srv.url}/api/v1/runs/{run['id']}/result?wait=20")
    assert code == 200 and json.loads(body)["result"] == "hello curl"


@pytest.mark.parametrize("body, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("", "empty"),
    ('{"target": 5}', "target: expected a string"),
    ('{"target": "flows.star:main", "args": [1]}', "args: expected a JSON object"),
    ('{"target": "flows.star:main", "extra": 1}', "unknown field"),
    ('{"target": "nope.star:main"}', "does not exist"),
    ('{"target": "flows.star:nope"}', "no top-level function 'nope'"),
    ('{"target": "../outside.star:main"}', "FILE.star:FUNCTION"),
    ('{"target": "broken.star:main"}', "broken.star"),
    ('{"target": "flows.star:main", "timeout": "soon"}', "timeout"),
    ('{"target": "flows.star:main", "args": {"x": 1e999}}', "too large"),
    ('{"target": "flows.star:main", "args": {"x": NaN}}', "NaN"),
])
def test_bad_requests_are_400_and_store_nothing(srv, w, body, message):
    n = count_runs(srv)
    resp = w.post("/api/v1/runs", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"} and message in resp.json()["error"]
    assert "Traceback" not in resp.text
    assert count_runs(srv) == n


def test_bodies_over_1_mib_are_413_by_length_and_while_streaming(srv, w):
    n = count_runs(srv)
    big = json.dumps({"target": "flows.star:main", "args": {"x": "y" * (1024 * 1024)}})
    resp = w.post("/api/v1/runs", content=big, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "larger than the limit" in resp.json()["error"]

    def chunks():  # no Content-Length: chunked transfer encoding, counted while read
        yield b'{"target": "flows.star:main", "args": {"x": "'
        for _ in range(300):
            yield b"z" * 4096
        yield b'"}}'

    resp = w.post("/api/v1/runs", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    run = start(w)
    resp = w.post(f"/api/v1/runs/{run['id']}/signals/go", content=json.dumps("s" * 300_000))
    assert resp.status_code == 413
    assert count_runs(srv) == n + 1


def test_idempotency_key_same_run_200_and_a_different_request_409(srv, w):
    key = {"Idempotency-Key": "order-42"}
    first = w.post("/api/v1/runs", json={"target": "flows.star:main", "args": {"name": "a"}}, headers=key)
    again = w.post("/api/v1/runs", json={"target": "flows.star:main", "args": {"name": "a"}}, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = w.post("/api/v1/runs", json={"target": "flows.star:main", "args": {"name": "b"}}, headers=key)
    assert other.status_code == 409 and "different request" in other.json()["error"]
    assert srv.rows("SELECT count(*) FROM idempotency_keys WHERE key = 'order-42'")[0][0] == 1


def test_100_concurrent_posts_with_one_key_make_one_run(srv):
    n = count_runs(srv)
    body = {"target": "flows.star:main", "args": {"name": "many"}}

    def post(_):
        with srv.client(srv.tokens["write"], timeout=60) as c:
            resp = c.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "burst"})
            return resp.status_code, resp.json()["id"]

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(post, range(100)))
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 99 + [201]
    assert len({run_id for _, run_id in results}) == 1
    assert count_runs(srv) == n + 1
    assert srv.rows("SELECT count(*) FROM runs WHERE args = ?", ('{"name":"many"}',))[0][0] == 1


# --- reading runs ---------------------------------------------------------------------


def test_list_filters_and_cursor_pagination(srv, w, r):
    ids = [start(w, args={"name": f"p{i}"})["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"target": "flows.star:main", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = r.get("/api/v1/runs", params=params).json()
        assert len(page["runs"]) <= 2
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert ids[::-1] == seen[:5]
    assert count_runs(srv) >= len(seen)
    for run_id in ids:
        w.get(f"/api/v1/runs/{run_id}/result", params={"wait": 20})
    done = r.get("/api/v1/runs", params={"state": "completed", "limit": 500}).json()["runs"]
    assert set(ids) <= {run["id"] for run in done} and all(run["state"] == "completed" for run in done)
    assert r.get("/api/v1/runs", params={"target": "flows.star:waits"}).json()["runs"] == [] or all(
        run["function"] == "waits" for run in r.get("/api/v1/runs", params={"target": "flows.star:waits"}).json()["runs"])
    for bad in ({"state": "sleeping"}, {"limit": 0}, {"limit": "x"}, {"cursor": "garbage!"}):
        resp = r.get("/api/v1/runs", params=bad)
        assert resp.status_code == 400 and "error" in resp.json()


def test_children_are_listed_by_parent(srv, w, r):
    run = start(w, "flows.star:parent")
    done = w.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 20})
    assert done.status_code == 200 and done.json()["result"] == "hello child"
    kids = r.get("/api/v1/runs", params={"parent": run["id"]}).json()["runs"]
    assert [k["function"] for k in kids] == ["main"]


def test_a_run_is_what_flowmetal_show_json_says_also_by_prefix(srv, w, r):
    run = start(w, args={"name": "shown"})
    assert w.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 20}).status_code == 200
    api = r.get(f"/api/v1/runs/{run['id'][:10]}").json()
    cli = json.loads(srv.cli("show", run["id"], "--json").stdout)
    assert api == cli
    assert [e["builtin"] for e in api["journal"]] == [] or api["journal"][0]["seq"] >= 1
    journal = r.get(f"/api/v1/runs/{run['id']}/journal").json()
    assert journal["journal"] == cli["journal"]


def test_journal_after_a_sequence_number(srv, w, r):
    run = start(w, "flows.star:chatty", args={"n": 2})
    assert w.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 20}).status_code == 200
    entries = r.get(f"/api/v1/runs/{run['id']}/journal").json()["journal"]
    assert [e["builtin"] for e in entries] == ["sleep", "sleep"]
    later = r.get(f"/api/v1/runs/{run['id']}/journal", params={"after": entries[0]["seq"]}).json()["journal"]
    assert later == entries[1:]
    assert r.get(f"/api/v1/runs/{run['id']}/journal", params={"after": -1}).status_code == 400


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/runs/zzzzzzzz"), ("GET", "/api/v1/runs/zzzzzzzz/journal"),
    ("GET", "/api/v1/runs/zzzzzzzz/logs"), ("GET", "/api/v1/runs/zzzzzzzz/result"),
    ("POST", "/api/v1/runs/zzzzzzzz/cancel"), ("POST", "/api/v1/runs/zzzzzzzz/signals/go"),
])
def test_unknown_runs_are_404(srv, w, method, path):
    n = srv.rows("SELECT count(*) FROM signals")[0][0]
    resp = w.request(method, path, json=1 if path.endswith("go") else None)
    assert resp.status_code == 404 and resp.json() == {"error": "no run 'zzzzzzzz'"}
    assert srv.rows("SELECT count(*) FROM signals")[0][0] == n


def test_unknown_endpoint_and_method_are_json(srv, w):
    resp = w.get("/api/v1/nothing")
    assert resp.status_code == 404 and resp.json() == {"error": "no such endpoint"}
    resp = w.delete("/api/v1/runs")
    assert resp.status_code == 405 and "error" in resp.json()


# --- logs, results, signals, cancel ------------------------------------------------------


def test_logs_json_and_a_live_sse_stream(srv, w, r):
    run = start(w, "flows.star:chatty", args={"n": 4})
    received = []
    with r.stream("GET", f"/api/v1/runs/{run['id']}/logs", headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line.startswith("id: "):
                event["id"] = line[4:]
            elif line == "" and event:
                received.append((time.monotonic(), event))
                event = {}
                if received[-1][1]["event"] == "end":
                    break
    ended_at = srv.rows("SELECT ended_at FROM runs WHERE id = ?", (run["id"],))[0][0]
    logs = [e for _, e in received if e["event"] == "log"]
    assert [e["data"]["line"] for e in logs] == ["line 0", "line 1", "line 2", "line 3"]
    assert received[-1][1] == {"event": "end", "data": {"run_id": run["id"], "state": "completed"}}
    # live: the first line arrived while the run still had more than a second to go
    assert received[-1][0] - received[0][0] > 1.0
    assert ended_at is not None
    page = r.get(f"/api/v1/runs/{run['id']}/logs").json()
    assert [x["line"] for x in page["lines"]] == ["line 0", "line 1", "line 2", "line 3"]
    rest = r.get(f"/api/v1/runs/{run['id']}/logs", params={"after": page["lines"][1]["cursor"]}).json()
    assert [x["line"] for x in rest["lines"]] == ["line 2", "line 3"] and rest["next"] == page["next"]
    assert r.get(f"/api/v1/runs/{run['id']}/logs", params={"after": "abc"}).status_code == 400
    # curl -N sees the same stream, ending by itself
    code, body = curl("-N", "-H", f"Authorization: Bearer {srv.tokens['read']}", "-H", "Accept: text/event-stream",
                      f"{srv.url}/api/v1/runs/{run['id']}/logs")
    assert code == 200 and body.count("event: log") == 4 and "event: end" in body


def test_result_long_poll_202_then_200_and_a_signal_wakes_the_run(srv, w, r):
    run = start(w, "flows.star:waits")
    t0 = time.monotonic()
    resp = r.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 1})
    assert resp.status_code == 202 and resp.json()["state"] in ("pending", "running", "waiting")
    assert 0.9 < time.monotonic() - t0 < 3
    box = {}

    def poll():
        box["t0"] = time.monotonic()
        box["resp"] = r.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 30})
        box["t1"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    for _ in range(200):
        if srv.rows("SELECT state FROM runs WHERE id = ?", (run["id"],))[0][0] == "waiting":
            break
        time.sleep(0.02)
    time.sleep(0.3)
    sent = w.post(f"/api/v1/runs/{run['id']}/signals/go", json={"ok": True})
    t_sent = time.monotonic()
    assert sent.status_code == 200 and sent.json()["id"] == run["id"]
    thread.join(30)
    assert box["resp"].status_code == 200
    assert box["resp"].json()["result"] == {"got": {"ok": True}}
    assert box["t1"] - t_sent < 2.0  # woken by the change, not at the end of the wait
    assert r.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 61}).status_code == 400
    resp = w.post(f"/api/v1/runs/{run['id']}/signals/go", json=1)
    assert resp.status_code == 409 and "has ended" in resp.json()["error"]


def test_a_signal_sent_before_the_wait_is_kept_and_bad_payloads_are_400(srv, w):
    run = start(w, "flows.star:waits")
    n = srv.rows("SELECT count(*) FROM signals")[0][0]
    bad = w.post(f"/api/v1/runs/{run['id']}/signals/go", content="{nope")
    assert bad.status_code == 400 and srv.rows("SELECT count(*) FROM signals")[0][0] == n
    code, _ = curl("-X", "POST", "-H", f"Authorization: Bearer {srv.tokens['write']}",
                   f"{srv.url}/api/v1/runs/{run['id']}/signals/go")  # no body: null
    assert code == 200
    done = w.get(f"/api/v1/runs/{run['id']}/result", params={"wait": 20})
    assert done.status_code == 200 and done.json()["result"] == {"got": None}


def test_cancel_a_waiting_run_then_409(srv, w):
    run = start(w, "flows.star:waits")
    for _ in range(200):
        if srv.rows("SELECT state FROM runs WHERE id = ?", (run["id"],))[0][0] == "waiting":
            break
        time.sleep(0.02)
    resp = w.post(f"/api/v1/runs/{run['id']}/cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
    assert srv.rows("SELECT state FROM runs WHERE id = ?", (run["id"],))[0][0] == "cancelled"
    again = w.post(f"/api/v1/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]


# --- metrics and the document -------------------------------------------------------------


def test_metrics_count_runs_effects_and_requests(srv, r):
    text = r.get("/metrics").text
    states = dict(srv.rows("SELECT state, count(*) FROM runs GROUP BY state"))
    assert f'flowmetal_runs{{state="completed"}} {float(states["completed"])}' in text
    assert 'flowmetal_journal_entries{builtin="sleep",status="completed"}' in text
    assert 'flowmetal_api_requests_total{method="POST",route="/api/v1/runs",status="201"}' in text
    assert 'route="/api/v1/runs/{id}"' in text  # the template, not each run's path


def test_the_openapi_document_covers_every_route(srv):
    doc = httpx.get(f"{srv.url}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    expected = {
        ("post", "/api/v1/runs"), ("get", "/api/v1/runs"), ("get", "/api/v1/runs/{id}"),
        ("get", "/api/v1/runs/{id}/journal"), ("get", "/api/v1/runs/{id}/logs"),
        ("get", "/api/v1/runs/{id}/result"), ("post", "/api/v1/runs/{id}/cancel"),
        ("post", "/api/v1/runs/{id}/signals/{name}"), ("get", "/api/v1/schedules"),
        ("get", "/healthz"), ("get", "/metrics"), ("get", "/api/v1/openapi.json"),
        ("get", "/callbacks/{token}"), ("post", "/callbacks/{token}"), ("post", "/api/v1/tasks/claim"),
        ("post", "/api/v1/tasks/{id}/heartbeat"), ("post", "/api/v1/tasks/{id}/complete"),
        ("post", "/api/v1/tasks/{id}/fail"), ("post", "/api/v1/schedules/{name}/pause"),
        ("post", "/api/v1/schedules/{name}/resume"), ("post", "/api/v1/schedules/{name}/trigger"),
        ("get", "/api/v1/tokens"), ("post", "/api/v1/tokens"), ("delete", "/api/v1/tokens/{name}"),
        ("post", "/api/v1/runs/{id}/fork"), ("post", "/api/v1/runs/{id}/retry"),
    }
    actual = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert actual == expected
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if path.startswith(("/api/v1/runs", "/api/v1/schedules", "/api/v1/tokens")):
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert set(doc["paths"]["/api/v1/runs"]["post"]["responses"]) >= {"200", "201", "400", "413"}
    assert set(doc["paths"]["/api/v1/runs/{id}/result"]["get"]["responses"]) >= {"200", "202", "404"}
    assert set(doc["paths"]["/api/v1/runs/{id}/fork"]["post"]["responses"]) >= {"201", "400", "404", "409"}
    assert set(doc["paths"]["/api/v1/tokens"]["post"]["responses"]) >= {"201", "400", "409"}
    for action in ("pause", "resume", "trigger"):
        op = doc["paths"][f"/api/v1/schedules/{{name}}/{action}"]["post"]
        assert "admin" in op["description"] and "404" in op["responses"]


def test_doc_api_md_has_a_curl_example_for_every_route():
    """doc/api.md shows each route of the OpenAPI document as a curl command of its method."""
    import re
    from pathlib import Path

    from flowmetal.server.app import openapi_document

    text = (Path(__file__).resolve().parent.parent / "doc" / "api.md").read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.lstrip().startswith("curl ")]
    missing = []
    for path, ops in openapi_document()["paths"].items():
        where = re.sub(r"\\\{[^}]+\\\}", r"[^/ \"?]+", re.escape(path)) + r"(?:[\"?\s]|$)"
        url = re.compile(r"(\$FM" + where + r")|(\$CALLBACK_URL)" if path.startswith("/callbacks") else
                         r"\$FM" + where)
        for method in ops:
            def fits(line, method=method):
                sends = "-X POST" in line or " -d " in line
                return {"get": not sends and "-X " not in line, "post": sends,
                        "delete": "-X DELETE" in line}[method]
            if not any(url.search(line) and fits(line) for line in commands):
                missing.append(f"{method.upper()} {path}")
    assert missing == []
