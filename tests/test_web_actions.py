"""The web view's newer parts in a real browser (Debian's Chromium through Playwright)
against a real `flowmetal serve` on 127.0.0.1: approving and rejecting an approval
callback, retry and fork at a journal entry (and a refused fork that creates nothing),
the workers and tasks page with waiting and leased tasks, and the runs page's
created since/until filter (and the same filter on GET /api/v1/runs).
Screenshots go where tests/test_web.py puts them."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from serverutil import Served, workspace
from test_web import CHROMIUM, shot, start, wait_state

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")]

FLOWS = """
def approve(name = "deploy"):
    cb = callback(name = name, approval = True)
    log("approve at", cb.url)
    v = wait_callback(cb)
    if v["approved"]:
        return {"decision": "approved", "payload": v}
    return {"decision": "rejected", "payload": v}

def hook():
    cb = callback(name = "hook")
    log("hook at", cb.url)
    return wait_callback(cb)

def work(n = 1):
    return task("builds", {"n": n})

def quick():
    return 1
"""

LATE = """
def late():
    for i in range(5):
        sleep(0.01)
    r = sh(["sh", "-c", "exit %s"])
    return {"exit": r.exit_code}
"""


# A server error or a Python stack trace (a run's own error is a Starlark traceback, which
# the run page shows on purpose: "Traceback ... File <builtin>, ... * late.star:5").
ERRORS = re.compile(r"Internal Server Error|jinja2\.exceptions|File (&#34;|\")[^\n<]*\.py(&#34;|\"), line")


def check_clean(page):
    text = page.content()
    assert not ERRORS.search(text), f"{page.url} shows a server error:\n{text[:2000]}"


def visit(page, url):
    resp = page.goto(url)
    assert resp is not None and resp.status < 500, f"{url}: {resp and resp.status}"
    check_clean(page)
    return resp


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root, db = workspace(tmp_path_factory.mktemp("webact"), {"flows.star": FLOWS, "late.star": LATE % 3})
    s = Served(root, db, "flows.star")
    s.tokens = {scope: s.token(f"web-{scope}", scope) for scope in ("read", "write")}
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def api(srv):
    with srv.client(srv.tokens["write"]) as c:
        yield c


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                              "--disable-background-networking", "--no-first-run"])
        yield b
        b.close()


def new_page(browser, srv, scope="write", **ctx_args):
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, "bypass_csp": True, **ctx_args})
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.accept()))
    visit(pg, srv.url + "/")
    pg.get_by_label("Token").fill(srv.tokens[scope])
    pg.get_by_role("button", name="Log in").click()
    pg.wait_for_url(srv.url + "/")
    return pg


@pytest.fixture
def page(browser, srv):
    pg = new_page(browser, srv)
    yield pg
    pg.context.close()


def session(srv, scope):
    c = httpx.Client(base_url=srv.url, timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    assert c.post("/login", data={"csrf": csrf, "token": srv.tokens[scope], "next": "/"}).status_code == 303
    c.csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/").text).group(1)
    return c


def wait_for(fn, timeout=20, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def page_if(client, path, test):
    text = client.get(path).text
    return text if test(text) else None


def waiting_on_effect(api, run_id):
    return wait_for(lambda: (d := api.get(f"/api/v1/runs/{run_id}").json())["state"] == "waiting"
                    and d["waiting_for"].get("kind") == "effect" and d, what=f"{run_id} to wait")


def check_url(srv, api, run_id, url):
    """`url` is the run's callback URL: it names the run (the logs mask its token, a secret)."""
    line = wait_for(lambda: api.get(f"/api/v1/runs/{run_id}/logs").json()["lines"], what="a log line")[0]["line"]
    assert line.split()[-1] == url.rsplit("/", 1)[0] + "/***"
    with httpx.Client(base_url=srv.url) as c:
        doc = c.get("/callbacks/" + url.rsplit("/", 1)[1]).json()
    assert doc["run_id"] == run_id and doc["state"] == "waiting", doc


def test_approve_in_the_browser_completes_the_run(page, srv, api):
    run_id = start(api, "approve")
    waiting_on_effect(api, run_id)
    visit(page, f"{srv.url}/runs/{run_id}")
    box = page.locator(".waiting .callback")
    assert "Approval" in box.inner_text() and "deploy" in box.inner_text()
    # the URL shown is the run's own callback URL
    url = page.get_by_label("Callback URL").inner_text()
    check_url(srv, api, run_id, url)
    shot(page, "run-approval", full=False)
    page.get_by_role("button", name="Approve deploy").click()
    page.wait_for_function("document.querySelector('[data-run-page]')?.dataset.state == 'completed'", timeout=15_000)
    check_clean(page)
    assert page.dialogs and "Approve deploy" in page.dialogs[0]
    doc = wait_state(api, run_id, ("completed",))
    assert doc["result"] == {"decision": "approved", "payload": {"approved": True}}
    # the URL agrees: the callback is completed, and calling it with another body is refused
    token = url.rsplit("/", 1)[1]
    with httpx.Client(base_url=srv.url) as c:
        assert c.get(f"/callbacks/{token}").json()["state"] == "completed"
        assert c.post(f"/callbacks/{token}", json={"approved": False}).status_code == 409


def test_reject_needs_csrf_and_write_and_gives_a_value_the_program_tells_apart(srv, api):
    run_id = start(api, "approve", name="release")
    seq = waiting_on_effect(api, run_id)["waiting_for"]["seq"]
    with contextlib.closing(session(srv, "read")) as reader, contextlib.closing(session(srv, "write")) as writer:
        # a read token sees the approval but not its URL (the capability), and cannot decide
        text = reader.get(f"/runs/{run_id}").text
        assert "Approval" in text and "Callback URL" not in text and "write tokens only" in text
        assert "/callbacks/" not in re.sub(r"/runs/\w+/callbacks/", "", text)  # (only the page's own form actions)
        r = reader.post(f"/runs/{run_id}/callbacks/{seq}/approve", data={"csrf": reader.csrf})
        assert r.status_code == 403 and "needs write" in r.text
        # without the CSRF token: 403, nothing changes
        assert writer.post(f"/runs/{run_id}/callbacks/{seq}/reject", data={}).status_code == 403
        assert writer.post(f"/runs/{run_id}/callbacks/{seq}/reject", data={"csrf": "x"}).status_code == 403
        assert srv.rows("SELECT state FROM deferred WHERE run_id = ? AND seq = ?", (run_id, seq)) == [("waiting",)]
        assert api.get(f"/api/v1/runs/{run_id}").json()["state"] == "waiting"
        # a position that is not a callback, and a decision that does not exist
        assert writer.post(f"/runs/{run_id}/callbacks/99/approve", data={"csrf": writer.csrf}).status_code == 404
        assert writer.post(f"/runs/{run_id}/callbacks/{seq}/maybe", data={"csrf": writer.csrf}).status_code == 404
        r = writer.post(f"/runs/{run_id}/callbacks/{seq}/reject", data={"csrf": writer.csrf})
        assert r.status_code == 303 and r.headers["location"] == f"/runs/{run_id}"
        doc = wait_state(api, run_id, ("completed",))
        assert doc["result"] == {"decision": "rejected", "payload": {"approved": False}}
        # deciding again: the run has ended, the callback is void
        r = writer.post(f"/runs/{run_id}/callbacks/{seq}/approve", data={"csrf": writer.csrf})
        assert r.status_code == 409 and "already completed" in r.text and not ERRORS.search(r.text)
        # a plain callback shows its URL, and has no buttons: it is not an approval
        hook = start(api, "hook")
        hseq = waiting_on_effect(api, hook)["waiting_for"]["seq"]
        text = writer.get(f"/runs/{hook}").text
        check_url(srv, api, hook, re.search(r'aria-label="Callback URL">([^<]+)<', text).group(1))
        assert "Approve" not in text
        r = writer.post(f"/runs/{hook}/callbacks/{hseq}/approve", data={"csrf": writer.csrf})
        assert r.status_code == 400 and "not an approval" in r.text
        api.post(f"/api/v1/runs/{hook}/cancel")


def test_retry_after_fixing_the_file_and_a_refused_fork(page, srv, api):
    late = srv.root / "late.star"
    late.write_text(LATE % 3)
    r = api.post("/api/v1/runs", json={"target": "late.star:late"})
    run_id = r.json()["id"]
    doc = wait_state(api, run_id, ("failed",))
    assert "exit code 3" in doc["error"] and len(doc["journal"]) == 6
    visit(page, f"{srv.url}/runs/{run_id}")
    assert "from entry #6" in page.locator("section[aria-label=Retry]").inner_text()
    assert page.get_by_role("button", name="Fork from entry #1", exact=True).count() == 1
    shot(page, "run-retry", full=False)
    page.evaluate("window.scrollTo(0, document.querySelector('section[aria-label=Retry]').getBoundingClientRect().top"
                  " + window.scrollY - 10)")
    shot(page, "run-fork", full=False)
    late.write_text(LATE % 0)  # the fix, on disk
    page.get_by_role("button", name=f"Retry run {run_id} on the current files").click()
    page.wait_for_url(re.compile(r"/runs/(?!" + run_id + r")\w+$"))
    check_clean(page)
    new_id = page.url.rsplit("/", 1)[1]
    assert "Retry run" in page.dialogs[0]
    done = wait_state(api, new_id, ("completed",))
    assert done["result"] == {"exit": 0} and done["forked_from"] == run_id and done["forked_at"] == 5
    page.wait_for_function("document.querySelector('[data-run-page]')?.dataset.state == 'completed'", timeout=15_000)
    assert f"/runs/{run_id}" in page.locator("dl.facts").inner_html()  # "Forked from"
    # a change before the fork point: forking on the current files diverges; nothing is created
    late.write_text((LATE % 0).replace("sleep(0.01)", "sleep(0.02)"))
    before = srv.rows("SELECT count(*) FROM runs")[0][0]
    visit(page, f"{srv.url}/runs/{run_id}")
    page.get_by_label("Fork from entry #6 on the current files").check()
    page.get_by_role("button", name="Fork from entry #6", exact=True).click()
    page.wait_for_url(re.compile(r"/fork$"))
    check_clean(page)
    assert page.locator("h1").inner_text() == "Fork refused"
    text = page.locator("main").inner_text()
    assert "its first 5 journal entries do not replay" in text and "Nothing was created" in text
    detail = page.get_by_label("Details").inner_text()
    assert "at journal position 1" in detail
    assert 'sleep({"duration":0.01})' in detail and 'sleep({"duration":0.02})' in detail  # recorded, actual
    shot(page, "fork-refused", full=False)
    assert srv.rows("SELECT count(*) FROM runs")[0][0] == before
    # on the pinned code instead, the fork is made at that entry (and fails there again, as the old code did)
    visit(page, f"{srv.url}/runs/{run_id}")
    page.get_by_role("button", name="Fork from entry #3", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/(?!" + run_id + r")\w+$"))
    fork_id = page.url.rsplit("/", 1)[1]
    forked = wait_state(api, fork_id, ("failed",))
    assert forked["forked_from"] == run_id and forked["forked_at"] == 2 and "exit code 3" in forked["error"]
    # a completed run has no Retry; retry through a hand-made POST is refused
    with contextlib.closing(session(srv, "write")) as w:
        assert "Retry</button>" not in w.get(f"/runs/{new_id}").text
        r = w.post(f"/runs/{new_id}/retry", data={"csrf": w.csrf})
        assert r.status_code == 400 and "not failed" in r.text
        r = w.post(f"/runs/{run_id}/fork", data={"csrf": w.csrf, "at": "99"})
        assert r.status_code == 400 and "journal entries" in r.text
        assert w.post(f"/runs/{run_id}/fork", data={"at": "1"}).status_code == 403
    assert srv.rows("SELECT count(*) FROM runs")[0][0] == before + 1


def test_workers_and_tasks_page_with_waiting_tasks(browser, srv, api):
    runs = [start(api, "work", n=n) for n in (1, 2)]
    for r in runs:
        waiting_on_effect(api, r)
    with contextlib.closing(session(srv, "read")) as c:
        html = c.get("/workers").text
        assert not ERRORS.search(html)
        row = re.search(r'<tr data-queue="builds">(.*?)</tr>', html, re.S).group(1)
        assert re.search(r'class="depth">2<', row) and re.search(r'class="leased">0<', row)
        assert all(f'data-task="{r}:1"' in html for r in runs) and "not claimed yet" in html
        # the worker processes: one `flowmetal worker` (serve's embedded worker is not registered)
        proc = subprocess.Popen([sys.executable, "-m", "flowmetal", "worker"], cwd=srv.root, env=srv.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            html = wait_for(lambda: page_if(c, "/workers", lambda h: f":{proc.pid}:" in h),
                            what="the worker process on the page")
            row = re.search(rf'<tr data-worker="[^"]*:{proc.pid}:[^"]*">(.*?)</tr>', html, re.S).group(1)
            assert f"<td>{proc.pid}</td>" in row and "b-live" in row
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        assert f":{proc.pid}:" not in c.get("/workers").text  # stopped: no longer listed
        # an outside worker claims one: it is in flight
        claimed = api.post("/api/v1/tasks/claim", json={"queues": ["builds"], "lease": 120}).json()["tasks"][0]
        assert claimed["id"] in (f"{runs[0]}:1", f"{runs[1]}:1")  # the older task (the runs start concurrently)
        if claimed["id"] != f"{runs[0]}:1":
            runs.reverse()
        html = c.get("/workers").text
        row = re.search(r'<tr data-queue="builds">(.*?)</tr>', html, re.S).group(1)
        assert re.search(r'class="depth">2<', row) and re.search(r'class="leased">1<', row)
        task_row = re.search(rf'<tr data-task="{runs[0]}:1" class="leased">(.*?)</tr>', html, re.S).group(1)
        assert "in flight" in task_row
        # the run page says what it waits for: the task, its queue and its lease
        text = c.get(f"/runs/{runs[0]}").text
        assert f"Task <code>{runs[0]}:1</code> on queue" in text and "leased until" in text
    pg = new_page(browser, srv, "read")
    try:
        visit(pg, srv.url + "/workers")
        assert pg.locator('tr[data-queue="builds"] .depth').inner_text() == "2"
        assert "old" in pg.locator('tr[data-queue="builds"] .oldest').inner_text()
        shot(pg, "workers")
    finally:
        pg.context.close()
    r = api.post(f"/api/v1/tasks/{claimed['id']}/complete", json={"lease_token": claimed["lease_token"], "result": {"ok": 1}})
    assert r.status_code == 200, r.text
    assert wait_state(api, runs[0], ("completed",))["result"] == {"ok": 1}
    with contextlib.closing(session(srv, "read")) as c:
        row = re.search(r'<tr data-queue="builds">(.*?)</tr>', c.get("/workers").text, re.S).group(1)
        assert re.search(r'class="depth">1<', row) and re.search(r'class="leased">0<', row)
    api.post(f"/api/v1/runs/{runs[1]}/cancel")
    with contextlib.closing(session(srv, "read")) as c:
        assert wait_for(lambda: page_if(c, "/workers", lambda h: 'data-queue="builds"' not in h), what="no queue")


def test_created_since_until_on_the_page_and_the_api(browser, srv, api):
    first = start(api, "quick")
    time.sleep(1.2)
    second = start(api, "quick")
    time.sleep(1.2)
    third = start(api, "quick")
    docs = {i: wait_state(api, i, ("completed",)) for i in (first, second, third)}
    t2 = docs[second]["created_at"]
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"  # noqa: E731

    def listed(**q):
        r = api.get("/api/v1/runs", params={"limit": 500, **q})
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["runs"]]

    assert second in listed(since=str(t2)) and first not in listed(since=str(t2))
    assert listed(since=str(t2), until=str(t2 + 0.001)) == [second]
    assert listed(since=iso(t2), until=iso(t2 + 0.001)) == [second]
    assert listed(since=iso(t2 - 0.6), until=iso(t2 + 0.6)) == [second]
    assert first in listed(until=str(t2)) and second not in listed(until=str(t2)) and third not in listed(until=str(t2))
    assert {first, second, third} <= set(listed(since="1h"))
    assert listed(since="2999-01-01") == []
    # pages of one follow the cursor inside the range
    r = api.get("/api/v1/runs", params={"limit": 1, "since": str(docs[first]["created_at"]),
                                        "until": str(docs[third]["created_at"] + 0.001)}).json()
    assert [x["id"] for x in r["runs"]] == [third]
    r = api.get("/api/v1/runs", params={"limit": 1, "cursor": r["next"], "since": str(docs[first]["created_at"]),
                                        "until": str(docs[third]["created_at"] + 0.001)}).json()
    assert [x["id"] for x in r["runs"]] == [second] and r["next"] is not None
    for bad in ("yesterday", "2026-13-01", "nan"):
        r = api.get("/api/v1/runs", params={"since": bad})
        assert r.status_code == 400 and "since=" in r.json()["error"], r.text
    # the page: the same filter, in the URL, shown as a range
    pg = new_page(browser, srv, "read")
    try:
        pg.get_by_label("Created since").fill(iso(t2 - 0.6))
        pg.get_by_label("Created until").fill(iso(t2 + 0.6))
        pg.get_by_role("button", name="Filter").click()
        pg.wait_for_url(re.compile(r"since=.*until="))
        check_clean(pg)
        assert pg.locator("tr[data-run]").evaluate_all("rs => rs.map(r => r.dataset.run)") == [second]
        assert "Created from" in pg.locator(".range").inner_text()
        shot(pg, "runs-time-range", full=False)
        shared = pg.url
        visit(pg, shared)  # the same URL shows the same view
        assert pg.locator("tr[data-run]").count() == 1
        resp = visit(pg, srv.url + "/?since=yesterday")
        assert resp.status == 400 and "since=" in pg.locator(".error").inner_text()
    finally:
        pg.context.close()


def test_new_parts_dark_and_390_wide(browser, srv, api):
    run_id = start(api, "approve", name="narrow")
    job = start(api, "work", n=3)
    waiting_on_effect(api, run_id)
    waiting_on_effect(api, job)
    pg = new_page(browser, srv, "write", viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        for path, name in ((f"/runs/{run_id}", "run-approval-dark-390"), ("/workers", "workers-dark-390"),
                           ("/?since=1h", "runs-time-range-dark-390")):
            visit(pg, srv.url + path)
            assert pg.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 22, 26)"
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 400, (path, width)
            shot(pg, name)
            # every button and field has an accessible name
            unnamed = pg.evaluate("""() => [...document.querySelectorAll(
                    'button, input:not([type=hidden]), textarea, select')]
                .filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length) || e.textContent.trim()))
                .map(e => e.outerHTML)""")
            assert unnamed == [], (path, unnamed)
        assert pg.get_by_role("button", name="Approve narrow").count() == 0  # (the last page is the runs page)
        visit(pg, srv.url + f"/runs/{run_id}")
        assert pg.get_by_role("button", name="Fork from entry #2", exact=True).count() == 1
        assert pg.get_by_role("checkbox", name="Fork from entry #2 on the current files").count() == 1
    finally:
        pg.context.close()
    api.post(f"/api/v1/runs/{run_id}/cancel")
    api.post(f"/api/v1/runs/{job}/cancel")


def test_pages_read_without_javascript(browser, srv, api):
    run_id = start(api, "approve", name="nojs")
    waiting_on_effect(api, run_id)
    pg = new_page(browser, srv, "write", java_script_enabled=False)
    try:
        for path in (f"/runs/{run_id}", "/workers", "/?since=1h"):
            visit(pg, srv.url + path)
        visit(pg, f"{srv.url}/runs/{run_id}")
        pg.get_by_role("button", name="Approve nojs").click()  # no confirmation without a script: a plain form
        pg.wait_for_url(f"{srv.url}/runs/{run_id}")
        assert wait_state(api, run_id, ("completed",))["result"]["decision"] == "approved"
    finally:
        pg.context.close()
