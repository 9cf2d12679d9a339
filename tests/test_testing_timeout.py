"""`flowmetal test --timeout`: a test that never ends fails naming itself, and the next tests run."""

import time

WORKFLOW = """\
def spin():
    n = 0
    for i in range(1000000000):
        n += i
    return n

def fine():
    sleep("1d")
    return 1
"""

TESTS = """\
load("wf.star", "spin", "fine")

def test_a_run_that_loops(t):
    t.run(spin)

def test_its_own_loop(t):
    n = 0
    for i in range(1000000000):
        n += 1

def test_after_them(t):
    t.eq(t.run(fine).result, 1)
"""


def test_a_looping_test_fails_with_a_clear_message_and_the_next_tests_run(fm):
    fm.write("wf.star", WORKFLOW)
    fm.write("wf_test.star", TESTS)
    started = time.monotonic()
    r = fm("test", "--timeout", "1", "--junit", "out.xml")
    took = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("FF.\n"), r.stdout
    out = r.stdout
    assert ("wf_test.star:4: test_a_run_that_loops did not end within its time limit of 1s of wall time "
            "(flowmetal test --timeout SECONDS)") in out
    assert "(wf.star:spin) was executing and was stopped" in out
    assert ("wf_test.star:8: test_its_own_loop did not end within its time limit of 1s of wall time") in out
    assert "2 failed, 1 passed" in out
    assert "Traceback" not in out + r.stderr
    # Each looping test is stopped about when its time is up (not after its billion iterations);
    # generous: the interpreter's start-up on a loaded 2-core machine takes seconds on its own.
    assert took < 30, took
    assert "did not end within its time limit" in (fm.root / "out.xml").read_text()


def test_the_default_time_limit_is_shown_and_a_bad_one_refused(fm):
    r = fm("test", "--help")
    assert "--timeout SECONDS" in r.stdout and "[default: 30" in r.stdout, r.stdout
    r = fm("test", "--timeout", "0")
    assert r.returncode == 2 and "--timeout" in r.stderr
