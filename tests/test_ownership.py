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


# --- an execution that breaks, a heartbeat that fails, a worker that is told to stop ---------

def test_an_exception_of_ours_in_an_execution_fails_the_run_with_exit_70_and_no_hang(fm):
    """FLOWMETAL_FAULT=execute raises inside the execution (a testing hook, engine/faults.py).
    The run used to stay running under a live owner whose heartbeat renewed it forever."""
    fm.write("w.star", "def main():\n    return 1\n")
    t0 = time.time()
    r = fm("run", "w.star", env={"FLOWMETAL_FAULT": "execute"}, timeout=30)
    assert r.returncode == 70, r.stderr
    assert time.time() - t0 < 15
    assert "internal error: InjectedFault in " in r.stderr and "this is a bug in Flowmetal" in r.stderr
    assert "Traceback" not in r.stderr
    row = fm.run_row(read_run_id_text(r.stderr))
    assert row["state"] == "failed" and row["owner"] is None and row["lease_expires"] is None
    assert row["error"].startswith("internal error: InjectedFault in execute (runner.py:")


def read_run_id_text(stderr):
    return next(line.split()[1] for line in stderr.splitlines() if line.startswith("run "))


def test_heartbeat_errors_are_reported_once_and_the_worker_goes_on(fm):
    fm.write("w.star", 'def main():\n    sh("sleep 2")\n    return "ok"\n')
    r = fm("run", "w.star", env={"FLOWMETAL_FAULT": "heartbeat"}, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout) == "ok", r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "heartbeat: InjectedFault" in ln]
    assert len(lines) == 1, r.stderr  # about four failed beats, one line (rate-limited)
    assert "retrying" in lines[0]


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_drains_a_worker_within_its_grace_and_leaves_no_process_behind(fm):
    pid_file = fm.root / "pgid"
    fm.write("w.star", 'def main():\n    sh("echo $$ > %s; sleep 30")\n    return "done"\n' % pid_file)
    run_id = fm("start", "w.star").stdout.strip()
    worker = fm.spawn("worker", "--grace", "3s")
    end = time.time() + 15
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.time() < end:
        time.sleep(0.05)
    pgid = int(pid_file.read_text())
    assert _group_alive(pgid)
    t0 = time.time()
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(10) == 0, worker.err()
    assert time.time() - t0 < 3 + 1.5
    end = time.time() + 2
    while _group_alive(pgid) and time.time() < end:
        time.sleep(0.05)
    assert not _group_alive(pgid)  # the sh command and its sleep are gone
    row = fm.run_row(run_id)
    assert row["state"] == "running" and row["owner"] is None  # resumable at once
    assert fm.journal(run_id)[0]["status"] == "started"  # the effect was interrupted, not recorded as done
