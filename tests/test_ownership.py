"""Ownership: a run with a live owner is never taken over; an interrupted run stays resumable."""

import json
import os
import signal
import time

from conftest import read_run_id

SLOW = """
def main(out):
    sh("echo first >> %s" % out)
    sh("sleep 3")
    sh("echo second >> %s" % out)
    return "done"
"""


def start_slow_run(fm):
    """`flowmetal run` of SLOW in the background, returned once its first step ran."""
    out = fm.root / "out.txt"
    fm.write("slow.star", SLOW)
    proc = fm.spawn("run", "slow.star", "-a", f"out={out}")
    run_id = read_run_id(proc)
    end = time.time() + 10
    while not out.exists() and time.time() < end:
        time.sleep(0.02)
    return proc, run_id, out


def test_live_owner_is_not_taken_over(fm):
    proc, run_id, out = start_slow_run(fm)
    r = fm("resume", run_id)
    assert r.returncode == 2 and "lease is current" in r.stderr
    r = fm("resume")  # no orphans: the owner is alive
    assert r.returncode == 0 and "no orphaned runs" in r.stderr
    w = fm("worker", "--until-idle", timeout=30)
    assert w.returncode == 0
    assert proc.wait(20) == 0
    assert out.read_text().splitlines() == ["first", "second"]
    assert fm.run_row(run_id)["executions"] == 1


def test_ctrl_c_leaves_the_run_resumable(fm):
    proc, run_id, out = start_slow_run(fm)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(15) == 130
    assert "flowmetal resume" in proc.err()
    row = fm.run_row(run_id)
    assert row["state"] == "running" and row["lease_expires"] == 0
    r = fm("resume")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == "done"
    assert out.read_text().splitlines() == ["first", "second"]
    sleep_entry = fm.journal(run_id)[1]
    assert sleep_entry["reexecuted"] == 1  # the interrupted sleep ran again
