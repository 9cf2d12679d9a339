"""`flowmetal test` with deferred effects: task() answered by t.mock_task fakes, callbacks
delivered by t.callback / t.approve / t.reject, their timeouts in virtual time."""

import re

WORKFLOW = """\
def build(commit, timeout = "1h"):
    r = task("build", {"commit": commit}, timeout = timeout, check = False)
    if not r.ok:
        return "no build: " + r.error
    return r.value

def strict(commit):
    return task("build-" + commit, {"commit": commit})

def deploy(hook):
    cb = callback(name = "deploy", approval = True, timeout = "1d")
    http(hook, method = "POST", json = {"text": "Approve: " + cb.url})
    decision = wait_callback(cb)
    if decision == None:
        fail("no decision in a day")
    if not decision.get("approved"):
        fail("rejected")
    return sh("echo deploying").stdout

def two():
    a = callback(name = "first")
    b = callback(name = "second")
    return [wait_callback(b), wait_callback(a)]

def forever():
    return wait_callback(callback())

def hands_out():
    return callback(name = "later")

def late(cb):
    return wait_callback(cb)
"""

PASSING = """\
load("wf.star", "build", "strict", "deploy", "two", "hands_out")

HOOK = "https://chat.example/hook"

def test_a_task_gets_its_fakes_result(t):
    t.mock_task("^build$", result = {"artifact": "a.tgz"})
    r = t.run(build, commit = "abc")
    t.eq(r.result, {"artifact": "a.tgz"})
    c = t.calls("task")
    t.eq(len(c), 1)
    t.eq([c[0].queue, c[0].text, c[0].payload, c[0].matched], ["build", "build", {"commit": "abc"}, True])
    t.eq(c[0].key, r.id + ":1")
    t.eq(c[0].result, {"ok": True, "value": {"artifact": "a.tgz"}, "error": None, "delivered": "completed"})
    t.eq(t.journal(r)[0].result, {"ok": True, "value": {"artifact": "a.tgz"}, "error": None, "attempts": 1})

def test_a_task_error_fails_the_run_with_check(t):
    t.mock_task("^build-", error = "compiler crashed", times = 1)
    r = t.run(strict, commit = "x1")
    t.eq(r.state, "failed")
    t.true("task() failed: compiler crashed" in r.error, r.error)

def test_a_slow_worker_takes_virtual_time(t):
    t.mock_task("build", result = 7, delay = "30m")
    start = t.now()
    t.eq(t.run(build, commit = "abc").result, 7)
    t.eq(t.now() - start, 1800)

def test_a_task_past_its_timeout_expires_in_virtual_time(t):
    t.mock_task("build", result = 7, delay = "2d")
    start = t.now()
    r = t.run(build, commit = "abc", timeout = "1h")
    t.eq(r.result, "no build: timed out after 3600s")
    t.eq(t.now() - start, 3600)
    t.advance("2d")
    t.eq(t.calls("task")[0].result["delivered"], "expired")  # the late answer is refused, as a worker's

def test_approve_by_handle(t):
    t.mock_http(HOOK, method = "POST")
    t.mock_sh("^echo deploying$", stdout = "ok\\n")
    h = t.start(deploy, hook = HOOK)
    t.eq(t.status(h).state, "waiting")
    sent = t.calls("http")[0].json["text"]  # the fake gets the real URL, as a chat service would
    t.true(sent.startswith("Approve: http://127.0.0.1:8420/callbacks/") and "***" not in sent, sent)
    t.eq(t.journal(h)[1].args["json"]["text"], "Approve: http://127.0.0.1:8420/callbacks/***")  # never stored
    t.eq(t.approve(h), "completed")
    t.eq(t.wait(h).result, "ok\\n")

def test_reject_by_the_callbacks_name(t):
    t.mock_http(HOOK)
    h = t.start(deploy, hook = HOOK)
    t.reject("deploy")
    t.eq(t.wait(h).error.split("\\n")[0], "fail: rejected")

def test_a_callback_payload_and_name(t):
    h = t.start(two)
    t.callback(h, {"n": 1}, name = "first")
    t.eq(t.status(h).state, "waiting")
    t.callback("second", "two")
    t.eq(t.wait(h).result, ["two", {"n": 1}])

def test_a_callback_by_its_id(t):
    h = t.start(two)
    first = t.journal(h)[0].result  # what callback() returned: id "RUN:SEQ", name...
    t.eq(first["name"], "first")
    t.eq(t.callback(first, {"x": 1}), "completed")
    t.eq(t.callback(first, {"x": 1}), "duplicate")
    t.eq(t.callback(first, {"x": 2}), "conflict")
    t.callback(h, "b", name = "second")
    t.eq(t.wait(h).result, ["b", {"x": 1}])

def test_a_callback_of_a_run_that_ended_is_void(t):
    cb = t.run(hands_out).result
    t.eq(t.callback(cb, {}), "void")

def test_a_callback_expires_after_a_day_of_virtual_time(t):
    t.mock_http(HOOK)
    start = t.now()
    h = t.start(deploy, hook = HOOK)
    r = t.wait(h)
    t.eq(t.now() - start, 86400)
    t.true("no decision in a day" in r.error, r.error)
    t.eq(t.callback(h, {"approved": True}), "expired")  # as the server's 410
"""

FAILING = """\
load("wf.star", "build", "deploy", "two", "forever")

def test_unfaked_task(t):
    t.mock_task("^deploy$", result = 1)
    t.run(build, commit = "abc")

def test_no_callback_yet(t):
    t.mock_task("build", result = 1)
    r = t.run(build, commit = "abc")
    t.callback(r, {})

def test_not_an_approval(t):
    h = t.start(two)
    t.approve(h, name = "first")

def test_two_open_callbacks(t):
    h = t.start(two)
    t.callback(h, 1)

def test_a_callback_nobody_delivers_deadlocks(t):
    t.wait(t.start(forever))

def test_a_task_fake_with_both_answers(t):
    t.mock_task("build", result = 1, error = "no")
"""


def test_tasks_and_callbacks_pass_under_the_virtual_clock(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", PASSING)
    r = fm("test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("..........\n"), r.stdout
    took = float(re.search(r"10 passed in ([0-9.]+)s", r.stdout)[1])
    assert took < 5, r.stdout  # two days of virtual time


def test_task_and_callback_misuses_fail_naming_what_is_missing(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", FAILING)
    r = fm("test", "--junit", "out.xml")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert out.startswith("FFFFFF\n"), out
    assert "wf_test.star:5: task() called with no matching fake: queue 'build'" in out
    assert "add t.mock_task(QUEUE_PATTERN, result = ...) for it" in out
    assert re.search(r"wf_test.star:10: t.callback\(\): run \w+ has no open callback \(no callback\(\)", out), out
    assert "wf_test.star:14: t.approve()/t.reject(): callback 'first' of run" in out
    assert "is not an approval (callback(approval = True))" in out
    assert re.search(r"wf_test.star:18: t.callback\(\): run \w+ has 2 open callbacks: callback 'first' "
                     r"of run \w+ \(position 1, waiting\); callback 'second' .*pass name = \.\.\. to choose one",
                     out), out
    assert "wf_test.star:21: deadlock:" in out
    assert "(wf.star:forever) waits for its callback at position 1 (wait_callback(); deliver it with t.callback())" \
        in out
    assert "wf_test.star:24: t.mock_task(): give result or error, not both" in out
    assert "6 failed" in out
    assert "task() called with no matching fake" in (fm.root / "out.xml").read_text()
