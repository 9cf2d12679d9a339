"""Waiting without holding anything: signals, children, cancel, timeouts, continue_as_new."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import both_stores, read_run_id, run_id_of

SIGNALS = """
def main():
    first = wait_signal("approve")
    second = wait_signal("approve")
    none = wait_signal("never", timeout = "1s")
    return {"first": first, "second": second, "none": none}
"""


@both_stores
def test_signals_sent_before_waiting_are_kept_and_ordered(fm):
    fm.write("sig.star", SIGNALS)
    run_id = fm("start", "sig.star").stdout.strip()
    assert fm("signal", run_id, "approve", '{"by": "ann"}').returncode == 0
    assert fm("signal", run_id, "approve", '"bob"').returncode == 0
    t0 = time.time()
    r = fm("resume", run_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"first": {"by": "ann"}, "second": "bob", "none": None}
    assert 0.9 <= time.time() - t0 < 5


@both_stores
def test_signal_wakes_a_waiting_run_quickly(fm):
    fm.write("w.star", 'def main():\n    v = wait_signal("go")\n    return now()\n')
    proc = fm.spawn("run", "w.star")
    run_id = read_run_id(proc)
    assert fm.wait_state(run_id, "waiting")["owner"] is None  # a waiting run holds nothing
    assert fm("signal", run_id, "go", "1").returncode == 0
    proc.wait(20)
    out, err = proc.out(), proc.err()
    assert proc.returncode == 0, err
    assert "waiting for signal go" in err
    st = fm.store()
    [signal] = st.signals(run_id)
    st.close()
    # from the signal's commit to the run's next effect; not the signal command's start-up
    assert 0 < float(out) - signal["sent_at"] < 1.0


@both_stores
def test_signal_errors(fm):
    fm.write("w.star", 'def main():\n    return wait_signal("go")\n')
    run_id = fm("start", "w.star").stdout.strip()
    r = fm("signal", run_id, "go", "{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = fm("signal", run_id, "go", "-", input=json.dumps("x" * 300_000))
    assert r.returncode == 2 and "larger than the limit" in r.stderr
    fm("signal", run_id, "go", "5")
    assert json.loads(fm("resume", run_id).stdout) == 5
    r = fm("signal", run_id, "go", "6")
    assert r.returncode == 2 and "has ended" in r.stderr


FANOUT = """
def child(i, fail_me = False):
    sleep("1s")
    if fail_me:
        fail("child %d failed on purpose" % i)
    return i * i

def main(n = 10, bad = -1):
    handles = [spawn(child, i, fail_me = (i == bad)) for i in range(n)]
    results = wait(handles)
    return [{"ok": r.ok, "value": r.value, "error": r.error, "state": r.state} for r in results]
"""


@both_stores
def test_children_run_concurrently_and_failures_are_values(fm):
    fm.write("fan.star", FANOUT)
    t0 = time.time()
    r = fm("run", "fan.star", "-a", "bad:=3")
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert elapsed < 5, elapsed
    assert [x["value"] for x in results if x["ok"]] == [i * i for i in range(10) if i != 3]
    assert results[3]["ok"] is False and results[3]["state"] == "failed"
    assert "child 3 failed on purpose" in results[3]["error"]
    run_id = run_id_of(r.stderr)
    shown = json.loads(fm("show", run_id, "--json").stdout)
    assert len(shown["children"]) == 10
    child = json.loads(fm("show", shown["children"][0], "--json").stdout)
    assert child["parent_id"] == run_id
    assert "children (10)" in fm("show", run_id).stdout


CANCEL_TREE = """
def child():
    sleep("1h")

def main():
    return wait([spawn(child), spawn(child)])
"""


@both_stores
def test_cancel_parent_cancels_waiting_children(fm):
    fm.write("tree.star", CANCEL_TREE)
    proc = fm.spawn("run", "tree.star")
    run_id = read_run_id(proc)
    fm.wait_state(run_id, "waiting")
    st = fm.store()
    end = time.time() + 10
    while time.time() < end and len([c for c in st.list_runs(parent_id=run_id) if c["state"] == "waiting"]) < 2:
        time.sleep(0.05)
    r = fm("cancel", run_id)
    assert r.returncode == 0, r.stderr
    proc.wait(15)
    assert proc.returncode == 1
    assert fm.run_row(run_id)["state"] == "cancelled"
    assert [c["state"] for c in st.list_runs(parent_id=run_id)] == ["cancelled", "cancelled"]


@both_stores
def test_cancel_running_sh_ends_it_within_grace(fm):
    pidfile = fm.root / "pid"
    fm.write("long.star", f'def main():\n    sh("echo $$ > {pidfile}; exec sleep 60")\n')
    proc = fm.spawn("run", "long.star")
    run_id = read_run_id(proc)
    end = time.time() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < end:
        time.sleep(0.05)
    t0 = time.time()
    assert fm("cancel", run_id).returncode == 0
    proc.wait(15)
    assert time.time() - t0 < 5
    assert proc.returncode == 1
    assert fm.run_row(run_id)["state"] == "cancelled"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@both_stores
def test_run_timeout_ends_as_timed_out(fm):
    fm.write("slow.star", 'def main():\n    sleep("30s")\n')
    r = fm("run", "slow.star", "--timeout", "1s")
    assert r.returncode == 1
    assert fm.run_row(run_id_of(r.stderr))["state"] == "timed_out"
    fm.write("busy.star", 'def main():\n    sh("sleep 30")\n')
    t0 = time.time()
    r = fm("run", "busy.star", "--timeout", "1s")
    assert r.returncode == 1 and time.time() - t0 < 8
    assert fm.run_row(run_id_of(r.stderr))["state"] == "timed_out"


LOOP = """
def main(i = 0, total = 0):
    if i >= 99:
        return total + i
    continue_as_new(i = i + 1, total = total + i)
"""


@both_stores
def test_continue_as_new_100_times(fm):
    fm.write("loop.star", LOOP)
    r = fm("run", "loop.star", timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == sum(range(100))
    st = fm.store()
    first = st.find_run(run_id_of(r.stderr))
    chain = [first]
    while chain[-1]["continued_as"]:
        chain.append(st.get_run(chain[-1]["continued_as"]))
    assert len(chain) == 100
    assert all(r["state"] == "completed" for r in chain)
    assert all(len(st.journal(r["id"])) <= 1 for r in chain)
    assert chain[5]["continued_from"] == chain[4]["id"]


@both_stores
@pytest.mark.slow
def test_worker_killed_during_sleep_resumes_at_once(fm):
    fm.write("nap.star", 'def main():\n    sleep("2s")\n    return now()\n')
    run_id = fm("start", "nap.star").stdout.strip()
    w = fm.spawn("worker")
    fm.wait_state(run_id, "waiting")
    os.killpg(w.pid, signal.SIGKILL)
    w.wait()
    time.sleep(5)
    restarted = time.time()
    w2 = fm.spawn("worker", "--until-idle")
    assert w2.wait(20) == 0
    row = fm.wait_state(run_id, "completed")
    assert json.loads(row["result"]) - restarted < 1.5


THOUSAND = """
def main():
    sleep("1h")
"""


@both_stores
@pytest.mark.slow
def test_thousand_sleeping_runs_hold_no_threads_and_little_memory(fm):
    fm.write("sleepy.star", THOUSAND)
    from flowmetal.clock import SYSTEM
    from flowmetal.engine.runs import create_run, load_target

    st = fm.store()
    name, texts = load_target(fm.root, fm.root / "sleepy.star", "main")
    with st.transaction():
        for _ in range(1000):
            create_run(st, SYSTEM, file=name, function="main", args={}, texts=texts, root_dir=str(fm.root))
    w = fm.spawn("worker", "--concurrency", "8")
    end = time.time() + 120
    while time.time() < end:
        waiting = st.x("SELECT count(*) FROM runs WHERE state = 'waiting'").fetchone()[0]
        if waiting == 1000:
            break
        time.sleep(0.5)
    assert waiting == 1000
    time.sleep(1)
    status = open(f"/proc/{w.pid}/status").read()
    threads = int(status.split("Threads:")[1].split()[0])
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    assert threads < 20, threads
    assert rss_kb < 150 * 1024, rss_kb


ORPHANS = """
def child():
    sleep("1h")

def main():
    h = spawn(child)
    r = wait(h, timeout = "0.2s")
    return r.state
"""


@both_stores
def test_children_do_not_outlive_their_parent(fm):
    fm.write("orphans.star", ORPHANS)
    r = fm("run", "orphans.star")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) in ("pending", "running", "waiting")
    parent = run_id_of(r.stderr)
    children = fm.store().list_runs(parent_id=parent)
    assert [c["state"] for c in children] == ["cancelled"]


CHILD_LOOP = """
def counter(i = 0):
    if i < 3:
        continue_as_new(i = i + 1)
    return i * 10

def main():
    return wait(spawn(counter)).value
"""


@both_stores
def test_waiting_on_a_child_that_continues_as_new_gets_its_last_runs_result(fm):
    fm.write("loop.star", CHILD_LOOP)
    r = fm("run", "loop.star")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 30  # the chain's result, not the first run's null
    incarnations = fm.store().list_runs(parent_id=run_id_of(r.stderr))
    assert len(incarnations) == 4 and all(c["state"] == "completed" for c in incarnations)


CHILD_LOOP_WAITS = """
def counter(i = 0):
    if i < 1:
        continue_as_new(i = i + 1)
    return wait_signal("never")

def main():
    r = wait(spawn(counter), timeout = "0.5s")
    return r.state
"""


@both_stores
def test_a_child_that_continued_as_new_does_not_outlive_its_parent(fm):
    fm.write("loop.star", CHILD_LOOP_WAITS)
    r = fm("run", "loop.star")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) in ("pending", "running", "waiting")  # the current incarnation's state
    incarnations = fm.store().list_runs(parent_id=run_id_of(r.stderr))
    assert sorted(c["state"] for c in incarnations) == ["cancelled", "completed"]
