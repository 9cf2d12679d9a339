"""`flowmetal resume` with no RUN finishes every run that no live process executes,
including runs a Ctrl-C left waiting on a timer or a signal (issue 12 item 9)."""

import json
import os
import signal

from conftest import read_run_id, wait_for

SLEEPER = """
def main():
    log("before")
    sleep("2s")
    log("after")
    return "woke"
"""

WAITER = """
def main():
    return {"got": wait_signal("go")}
"""


def interrupt_while_waiting(fm, name, text):
    """`flowmetal run` in the background, Ctrl-C once its run waits; returns the run id."""
    fm.write(name, text)
    proc = fm.spawn("run", name)
    run_id = read_run_id(proc)
    fm.wait_state(run_id, "waiting")
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(15) == 130
    assert fm.run_row(run_id)["state"] == "waiting"
    return run_id


def test_resume_finds_a_run_interrupted_during_sleep(fm):
    run_id = interrupt_while_waiting(fm, "sleeper.star", SLEEPER)
    r = fm("resume", timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"run {run_id}" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == "woke"
    assert fm.run_row(run_id)["state"] == "completed"
    r = fm("resume")
    assert r.returncode == 0 and "no orphaned runs" in r.stderr  # nothing left


def test_resume_waits_in_the_foreground_for_a_signal(fm):
    run_id = interrupt_while_waiting(fm, "waiter.star", WAITER)
    proc = fm.spawn("resume")
    wait_for(lambda: f"run {run_id}" in proc.err(), what="resume to take the run")
    assert proc.poll() is None  # it waits for the signal, as `flowmetal run` would
    assert fm("signal", run_id, "go", '"yes"').returncode == 0
    assert proc.wait(20) == 0, proc.err()
    assert json.loads(proc.out().strip().splitlines()[-1]) == {"got": "yes"}


def test_resume_takes_a_queued_run_and_leaves_ended_ones(fm):
    fm.write("one.star", "def main():\n    return 1\n")
    done = fm("run", "one.star")
    assert done.returncode == 0
    queued = fm("start", "one.star").stdout.strip()
    r = fm("resume", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("run ")] == [f"run {queued}"]  # not the ended one
