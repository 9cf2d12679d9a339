"""`flowmetal test`: the examples' own tests pass quickly, and every failure path says what failed."""

import re
import time
import xml.etree.ElementTree as ET

from conftest import REPO

WORKFLOW = """\
def main():
    sh("echo hi")
    sleep("30d")
    return wait_signal("go")

def waits_forever():
    return wait_signal("never")

def boss():
    h = spawn(waits_forever)
    return wait(h).value
"""


def test_the_examples_tests_pass_in_under_five_seconds(fm):
    r = fm("test", "examples/", "--junit", fm.root / "junit.xml", cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert set(first) == {"."} and len(first) >= 15, r.stdout
    assert " passed in " in r.stdout and "failed" not in r.stdout
    # The session's own wall time (the interpreter's start-up aside: on a loaded machine that alone
    # takes seconds), although the examples' virtual time spans weeks.
    took = float(re.search(r" passed in ([0-9.]+)s$", r.stdout.strip())[1])
    assert took < 5, f"flowmetal test examples/ took {took:.1f}s"
    suite = ET.parse(fm.root / "junit.xml").getroot()
    names = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
    for example in ("backup", "approval", "compress", "fanout", "remote_job", "hello"):
        assert any(cls == f"examples/{example}_test.star" for cls, _ in names), example
    assert suite.get("failures") == "0"


def test_a_failing_assertion_exits_1_with_file_line_and_both_values(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", """\
load("wf.star", "main")

def test_passes(t):
    t.eq(1, 1)

def test_wrong(t):
    t.mock_sh("^echo ")
    h = t.start(main)
    t.advance("30d")
    t.eq(t.status(h).state, "completed")
""")
    r = fm("test", "wf_test.star", "--junit", "out.xml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith(".F\n"), r.stdout
    assert "wf_test.star:10: t.eq() failed" in r.stdout
    assert "left:  \"waiting\"" in r.stdout and "right: \"completed\"" in r.stdout
    # the run's journal up to the failure
    assert "sh({\"cmd\":\"echo hi\"}) completed" in r.stdout
    assert "wait_signal({\"name\":\"go\"}) started" in r.stdout
    assert "1 failed, 1 passed" in r.stdout
    failure = ET.parse(fm.root / "out.xml").getroot().find("testcase[@name='test_wrong']/failure")
    assert failure is not None and "wf_test.star:10" in failure.get("message")
    # -k selects by name
    r = fm("test", ".", "-k", "passes")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout


def test_an_sh_with_no_fake_fails_the_test_naming_the_command(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", 'load("wf.star", "main")\n\ndef test_unfaked(t):\n    t.run(main)\n')
    r = fm("test")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "wf_test.star:4: sh() called with no matching fake: echo hi" in r.stdout


def test_a_deadlock_fails_with_what_each_run_waits_for(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", 'load("wf.star", "boss")\n\ndef test_stuck(t):\n    h = t.start(boss)\n'
                             '    t.wait(h)\n')
    r = fm("test")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "wf_test.star:5: deadlock:" in r.stdout
    assert "(wf.star:waits_forever) waits for signal 'never'" in r.stdout
    assert "(wf.star:boss) waits for its child run(s)" in r.stdout


def test_virtual_time_and_signals(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", """\
load("wf.star", "main")

def test_month(t):
    t.mock_sh("echo", times = 1)
    start = t.now()
    h = t.start(main)
    t.eq(t.status(h).state, "waiting")
    t.signal(h, "go", {"n": 1})
    r = t.wait(h)
    t.eq(r.result, {"n": 1})
    t.eq(t.now() - start, 30 * 86400)
    t.eq([e.builtin for e in t.journal(h)], ["sh", "sleep", "wait_signal"])
""")
    started = time.monotonic()
    r = fm("test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - started < 5


def test_a_test_file_that_does_not_load_exits_2(fm):
    fm.write("bad_test.star", "def test_x(t)\n    pass\n")
    r = fm("test")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "bad_test.star:1:" in r.stdout


def test_misuses_fail_the_test_with_a_clear_message(fm):
    fm.write("wf.star", "def ok():\n    return 1\n\ndef _private():\n    return 2\n")
    fm.write("wf_test.star", """\
load("wf.star", "ok")

def test_fails_on_a_run_that_completes(t):
    t.fails(ok)

def test_effect_in_the_test_itself(t):
    sh("echo")

def test_a_lambda(t):
    t.run(lambda: 1)

def test_unknown_schedule(t):
    t.fire_times("nightly", 0, 86400)
""")
    r = fm("test")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("FFFF\n"), r.stdout
    assert "wf_test.star:4: t.fails(): ok() did not fail" in r.stdout
    assert "it completed with result 1" in r.stdout
    assert "wf_test.star:7: sh() was called by the test itself" in r.stdout
    assert "wf_test.star:10: wf_test.star has no top-level function 'lambda'" in r.stdout
    assert "wf_test.star:13: t.fire_times(): 'nightly' is neither a declared schedule" in r.stdout


def test_continue_as_new_cancel_and_wait_timeouts_work_under_the_virtual_clock(fm):
    fm.write("c.star", """\
def counter(n = 0):
    sleep("1d")
    if n < 3:
        continue_as_new(n = n + 1)
    return n

def parent():
    h = spawn(child)
    return wait(h, timeout = "2h")

def child():
    return wait_signal("x")
""")
    fm.write("c_test.star", """\
load("c.star", "counter", "parent")

def test_continue(t):
    start = t.now()
    r = t.run(counter)
    t.eq(r.state, "completed")
    t.eq(r.result, 3)
    t.eq(t.now() - start, 4 * 86400)
    t.eq(len(t.runs()), 4)

def test_cancel(t):
    h = t.start(counter)
    t.cancel(h)
    t.eq(t.status(h).state, "cancelled")

def test_wait_timeout(t):
    start = t.now()
    r = t.run(parent)
    t.eq(r.result["state"], "waiting")
    t.eq(t.now() - start, 7200)
    t.eq([x.state for x in t.runs()], ["completed", "cancelled"])
""")
    r = fm("test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("...\n"), r.stdout
