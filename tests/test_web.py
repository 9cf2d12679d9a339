"""The web view (`flowmetal serve` at /) in a real browser: Debian's Chromium driven
by Playwright against a real server on 127.0.0.1. Screenshots go to
$FLOWMETAL_ARTIFACTS (default tests/artifacts/); .ci/run prints where."""

import contextlib
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from serverutil import Served, workspace

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")]
ARTIFACTS = Path(os.environ.get("FLOWMETAL_ARTIFACTS") or os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR")  # Bazel
                 or Path(__file__).parent / "artifacts")

FLOWS = """
def main(name = "world"):
    log("hello", name)
    return {"greeting": "hello " + name}

def fails():
    fail("it broke")

def waits():
    v = wait_signal("go")
    return {"got": v}

def chatty(n = 8):
    for i in range(n):
        log("line", i)
        sleep(0.4)
    return n

def big(marker):
    for i in range(18):
        sleep(0.01)
    r = sh(["sh", "-c", "test -f " + marker + " || { touch " + marker + "; exit 1; }"],
           retry = retry_policy(attempts = 3, initial = "0.2s", jitter = False, retry_on = ["exit:1"]))
    v = wait_signal("go")
    return {"exit": r.exit_code, "signal": v, "blob": ["x" * 60 for _ in range(20)]}

def parent():
    h = spawn(main, name = "child")
    return wait(h).value

def naps():
    sleep(60)
    return 1

def tick():
    return "tick"

schedule(name = "nightly", cron = "0 3 * * *", run = tick, timezone = "Europe/Berlin")
"""

ERRORS = re.compile(r"Traceback \(most recent call last\)|Internal Server Error|jinja2\.exceptions")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root, db = workspace(tmp_path_factory.mktemp("web"), {"flows.star": FLOWS})
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


@pytest.fixture
def page(browser, srv):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # for wait_for_function
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    pg.on("dialog", lambda d: d.accept())
    yield pg
    ctx.close()


def start(api, target, **args):
    r = api.post("/api/v1/runs", json={"target": f"flows.star:{target}", "args": args})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_state(api, run_id, states, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        doc = api.get(f"/api/v1/runs/{run_id}").json()
        if doc["state"] in states:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} stayed {doc['state']}")


def visit(page, url):
    resp = page.goto(url)
    assert resp is not None and resp.status < 500, f"{url}: {resp and resp.status}"
    check_clean(page)
    return resp


def check_clean(page):
    text = page.content()
    assert not ERRORS.search(text), f"{page.url} shows a server error:\n{text[:2000]}"


def login(page, srv, scope="write"):
    visit(page, srv.url + "/")
    assert page.url.startswith(srv.url + "/login")
    page.get_by_label("Token").fill(srv.tokens[scope])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(srv.url + "/")
    check_clean(page)


def shot(page, name, full=True):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def test_login_filter_and_open_a_run(page, srv, api):
    done = start(api, "main", name="web")
    failed = start(api, "fails")
    wait_state(api, done, ("completed",))
    wait_state(api, failed, ("failed",))
    login(page, srv)
    assert page.locator(f'tr[data-run="{done}"]').count() == 1
    # filter by state: only failed runs, and the filter is in the URL
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"state=failed"))
    check_clean(page)
    states = page.locator("tr[data-run] .state").all_inner_texts()
    assert states and set(states) == {"failed"}
    assert page.locator(f'tr[data-run="{failed}"]').count() == 1
    assert page.locator(f'tr[data-run="{done}"]').count() == 0
    # id prefix search
    visit(page, srv.url + "/?q=" + done[:11])
    assert page.locator("tr[data-run]").count() == 1
    # the run's page: result and journal
    page.click(f'a[href="/runs/{done}"]')
    page.wait_for_url(f"{srv.url}/runs/{done}")
    check_clean(page)
    assert "hello web" in page.locator("pre.json").all_inner_texts()[-1]
    page.wait_for_function("document.querySelectorAll('#log .line').length >= 1")
    assert "hello web" in page.locator("#log").inner_text()
    # a page that does not exist is a page, not a traceback
    resp = visit(page, srv.url + "/runs/nosuchrun")
    assert resp.status == 404


def test_live_log_and_journal_grow_while_it_runs(page, srv, api):
    login(page, srv)
    run_id = start(api, "chatty")
    wait_state(api, run_id, ("running", "waiting"))
    visit(page, f"{srv.url}/runs/{run_id}")
    page.wait_for_function("document.querySelectorAll('#log .line').length >= 1")
    first_lines = page.locator("#log .line").count()
    first_entries = int(page.locator("[data-run-page]").get_attribute("data-entries"))
    page.wait_for_function(f"document.querySelectorAll('#log .line').length > {first_lines}")
    # the page reloads itself as journal entries arrive
    page.wait_for_function(f"Number(document.querySelector('[data-run-page]').dataset.entries) > {first_entries}")
    assert page.locator(".timeline .entry").count() >= 1
    page.wait_for_function("document.querySelector('[data-run-page]').dataset.state == 'completed'", timeout=15_000)
    check_clean(page)
    page.wait_for_function("document.querySelectorAll('#log .line').length >= 8")


def test_signal_from_the_form_completes_the_run(page, srv, api, tmp_path):
    login(page, srv)
    run_id = start(api, "big", marker=str(tmp_path / "marker"))
    wait_state(api, run_id, ("waiting",))
    doc = api.get(f"/api/v1/runs/{run_id}").json()
    if doc["waiting_for"].get("kind") != "signal":
        end = time.time() + 15
        while api.get(f"/api/v1/runs/{run_id}").json().get("waiting_for", {}).get("kind") != "signal":
            assert time.time() < end
            time.sleep(0.1)
    visit(page, f"{srv.url}/runs/{run_id}")
    entries = page.locator(".timeline .entry")
    assert entries.count() >= 20
    assert page.locator(".timeline .entry.k-retry").count() >= 1
    assert page.locator(".timeline .entry.k-wait").count() >= 1
    assert "go" in page.locator(".waiting").inner_text()
    shot(page, "run-full")
    shot(page, "run", full=False)
    page.evaluate("window.scrollTo(0, document.querySelector('.legend').getBoundingClientRect().top + window.scrollY - 60)")
    shot(page, "run-timeline", full=False)
    # malformed JSON is refused in the page, nothing is sent
    page.get_by_label("Payload (JSON)").fill("{not json")
    page.get_by_role("button", name="Send signal").click()
    assert "Not JSON" in page.locator(".field-error").inner_text()
    assert api.get(f"/api/v1/runs/{run_id}").json()["state"] == "waiting"
    page.get_by_label("Payload (JSON)").fill('{"ok": true}')
    page.get_by_role("button", name="Send signal").click()
    page.wait_for_function("document.querySelector('[data-run-page]').dataset.state == 'completed'", timeout=15_000)
    check_clean(page)
    assert wait_state(api, run_id, ("completed",))["result"]["signal"] == {"ok": True}
    assert page.locator("details summary", has_text=re.compile(r"^Result \(")).count() == 1  # the large result is folded


def test_schedule_pause_shows_in_the_cli(page, srv):
    login(page, srv)
    visit(page, srv.url + "/schedules")
    card = page.locator('[data-schedule="nightly"]')
    assert "0 3 * * *" in card.inner_text() and "Europe/Berlin" in card.inner_text()
    shot(page, "schedules")
    card.get_by_role("button", name="Pause nightly").click()
    page.wait_for_url(re.compile(r"/schedules\?done="))
    check_clean(page)
    assert "paused" in page.locator('[data-schedule="nightly"] .badge').inner_text()
    out = srv.cli("schedule", "--list", "--json", "flows.star")
    assert out.returncode == 0, out.stderr
    listed = {s["name"]: s for s in json.loads(out.stdout)}
    assert listed["nightly"]["status"] == "paused"
    page.locator('[data-schedule="nightly"]').get_by_role("button", name="Resume nightly").click()
    page.wait_for_url(re.compile(r"/schedules\?done="))
    assert "active" in page.locator('[data-schedule="nightly"] .badge').inner_text()
    page.locator('[data-schedule="nightly"]').get_by_role("button", name="Trigger nightly now").click()
    page.wait_for_url(re.compile(r"/schedules\?done=trigger"))
    check_clean(page)
    fires = page.locator('[data-schedule="nightly"] tr.fire-started')
    assert fires.count() == 1 and "manual" in fires.inner_text()
    assert srv.rows("SELECT count(*) FROM runs WHERE schedule = 'nightly'")[0][0] == 1
    shot(page, "schedules")


def test_csrf_scope_and_logout(page, srv, api):
    waiting = start(api, "waits")
    wait_state(api, waiting, ("waiting",))
    login(page, srv)
    # a POST without the CSRF token: 403, the run still waits
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=srv.url, cookies=cookies) as c:
        r = c.post(f"/runs/{waiting}/signal", data={"name": "go", "payload": "1"})
        assert r.status_code == 403
        r = c.post(f"/runs/{waiting}/cancel", data={"csrf": "wrong"})
        assert r.status_code == 403
        assert c.get("/workers").status_code == 200
    assert api.get(f"/api/v1/runs/{waiting}").json()["state"] == "waiting"
    assert srv.rows("SELECT count(*) FROM signals WHERE run_id = ?", (waiting,))[0][0] == 0
    visit(page, srv.url + "/")
    shot(page, "runs")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login"))
    # the old cookie is dead, every page redirects to the login
    with httpx.Client(base_url=srv.url, cookies=cookies) as c:
        for path in ("/", f"/runs/{waiting}", "/schedules", "/workers"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        assert c.get("/ui/states?ids=" + waiting).status_code == 401
        assert c.post(f"/runs/{waiting}/cancel", data={"csrf": "x"}).status_code == 403
    visit(page, f"{srv.url}/runs/{waiting}")
    assert page.url.startswith(srv.url + "/login")
    # a read token sees pages but cannot act
    login(page, srv, "read")
    visit(page, f"{srv.url}/runs/{waiting}")
    page.get_by_role("button", name="Cancel run").click()
    assert "needs write" in page.content()
    assert api.get(f"/api/v1/runs/{waiting}").json()["state"] == "waiting"
    api.post(f"/api/v1/runs/{waiting}/cancel")


def test_a_timer_wait_shows_its_deadline_and_counts_down(page, srv, api):
    run_id = start(api, "naps")
    wait_state(api, run_id, ("waiting",))
    login(page, srv, "read")
    visit(page, f"{srv.url}/runs/{run_id}")
    waiting = page.locator(".waiting")
    assert "Timer: wakes at" in waiting.inner_text()
    first = page.locator(".countdown").inner_text()
    assert re.fullmatch(r"\(in \d+ s\)", first), first
    page.wait_for_function(f"document.querySelector('.countdown').textContent != {json.dumps(first)}")
    # times are shown in the viewer's zone, with UTC on hover
    assert page.locator(".waiting time").get_attribute("title").startswith("UTC ")
    api.post(f"/api/v1/runs/{run_id}/cancel")


def test_bad_token_is_refused(page, srv):
    visit(page, srv.url + "/login")
    page.get_by_label("Token").fill("fm_nothing_here")
    page.get_by_role("button", name="Log in").click()
    assert "not valid" in page.locator(".error").inner_text()
    visit(page, srv.url + "/")
    assert page.url.startswith(srv.url + "/login")


def test_dark_mode_and_narrow_screens(browser, srv, api):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", bypass_csp=True)
    page = ctx.new_page()
    try:
        login(page, srv)
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(20, 22, 26)", bg
        # nothing is wider than the screen but the tables' own scroll boxes
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, width
        shot(page, "runs-dark-390")
        visit(page, srv.url + "/schedules")
        shot(page, "schedules-dark-390")
    finally:
        ctx.close()


def http_login(srv, token):
    c = httpx.Client(base_url=srv.url, timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"csrf": csrf, "token": token, "next": "/runs/x?y=1"})
    assert r.status_code == 303 and r.headers["location"] == "/runs/x?y=1"
    return c


def test_top_level_and_parent_filters(srv, api):
    parent = start(api, "parent")
    wait_state(api, parent, ("completed",))
    child = api.get(f"/api/v1/runs/{parent}").json()["children"][0]
    with contextlib.closing(http_login(srv, srv.tokens["read"])) as c:
        ids = lambda q: re.findall(r'<tr data-run="([^"]+)"', c.get("/" + q).text)  # noqa: E731
        assert child in ids("") and parent in ids("")
        assert parent in ids("?top=1") and child not in ids("?top=1")
        assert ids(f"?parent={parent}") == [child]
        assert ids(f"?q={child}") == [child]
        r = c.get("/?state=nonsense")
        assert r.status_code == 400 and "expected one of" in r.text and not ERRORS.search(r.text)


def test_revoking_the_token_ends_its_sessions(srv):
    token = srv.token("web-revoked", "read")
    with contextlib.closing(http_login(srv, token)) as c:
        assert c.get("/").status_code == 200
        assert srv.cli("token", "revoke", "web-revoked").returncode == 0
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_login_refuses_a_foreign_next_and_a_missing_csrf(srv):
    with httpx.Client(base_url=srv.url) as c:
        assert c.post("/login", data={"token": srv.tokens["read"]}).status_code == 403
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
        r = c.post("/login", data={"csrf": csrf, "token": srv.tokens["read"], "next": "//evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
