"""Warm waits (engine/warm.py): a worker continues a parked run in place when its wait ends,
with the same journal and result as replay; a worker killed while a run is parked leaves it
waiting, and another worker takes it over by replay."""

import json
import os
import signal
import threading
import time

import pytest

from flowmetal.clock import SYSTEM
from flowmetal.engine.runs import create_run, load_target, send_signal
from flowmetal.engine.worker import Worker
from flowmetal.store.sqlite import SqliteStore

SIGNALS = """
def main(n):
    got = []
    for i in range(n):
        t = now()
        v = wait_signal("go")
        print("got %s" % v)
        got.append(v)
    return got
"""

CHILDREN = """
def child(i):
    return i * 2

def main(n):
    total = 0
    for i in range(n):
        total += wait(spawn(child, i = i)).value
    return total
"""


def _store(tmp_path, text, name="w.star"):
    (tmp_path / ".flowmetal").mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
    store = SqliteStore(tmp_path / ".flowmetal" / "t.db")
    return store, load_target(tmp_path, tmp_path / name, "main")


def _drive_signals(tmp_path, warm, n=20):
    store, (name, texts) = _store(tmp_path, SIGNALS)
    run_id = create_run(store, SYSTEM, file=name, function="main", args={"n": n}, texts=texts,
                        root_dir=str(tmp_path))
    worker = Worker(store, SYSTEM, concurrency=2, warm=warm)
    done = threading.Event()
    thread = threading.Thread(target=worker.run_forever, kwargs={"until": done.is_set}, daemon=True)
    thread.start()
    try:
        for i in range(n):
            end = time.monotonic() + 20
            while store.get_run(run_id)["state"] != "waiting" or store.has_signal(run_id, "go"):
                assert time.monotonic() < end, store.get_run(run_id)
                time.sleep(0.002)
            send_signal(store, SYSTEM, run_id, "go", json.dumps(i))
            worker.wakeup.set()
        end = time.monotonic() + 20
        while store.get_run(run_id)["state"] != "completed":
            assert time.monotonic() < end, store.get_run(run_id)
            time.sleep(0.01)
    finally:
        done.set()
        worker.wakeup.set()
        thread.join(10)
        worker.shutdown(grace=5)
    row = store.get_run(run_id)
    journal = [(e["seq"], e["builtin"], e["status"]) for e in store.journal(run_id)]
    logs = [line["line"] for line in store.logs(run_id)]
    store.close()
    return worker, row, journal, logs


def test_a_warm_worker_continues_waiting_runs_in_place_with_the_journal_of_replay(tmp_path):
    warm, row, journal, logs = _drive_signals(tmp_path / "warm", warm=8)
    cold, row0, journal0, logs0 = _drive_signals(tmp_path / "cold", warm=0)
    assert json.loads(row["result"]) == json.loads(row0["result"]) == list(range(20))
    assert journal == journal0 and len(journal) == 40
    assert logs == logs0 == [f"got {i}" for i in range(20)]
    # every claim after the first continued the parked run, none replayed; cold: none continued
    assert warm.resumed_warm == row["executions"] - 1 >= 19  # (a signal may beat a wait to it)
    assert cold.resumed_warm == 0
    assert not warm.warm.parked and not warm.threads  # the run ended: nothing is left parked


def test_warm_children_and_eviction_fall_back_to_replay(tmp_path):
    store, (name, texts) = _store(tmp_path, CHILDREN)
    ids = [create_run(store, SYSTEM, file=name, function="main", args={"n": 5}, texts=texts,
                      root_dir=str(tmp_path)) for _ in range(3)]
    worker = Worker(store, SYSTEM, concurrency=4, warm=1)  # three parents, room for one: evictions
    worker.run_forever(idle_exit=True)
    worker.shutdown(grace=5)
    for run_id in ids:
        row = store.get_run(run_id)
        assert row["state"] == "completed" and json.loads(row["result"]) == 20
        assert [e["builtin"] for e in store.journal(run_id)] == ["spawn", "wait"] * 5
    assert len(worker.warm) == 0 and not worker.threads


def test_a_wait_far_away_is_not_parked(tmp_path):
    store, (name, texts) = _store(tmp_path, 'def main():\n    sleep("1h")\n')
    run_id = create_run(store, SYSTEM, file=name, function="main", args={}, texts=texts, root_dir=str(tmp_path))
    worker = Worker(store, SYSTEM, concurrency=1, warm=8)
    worker.step()
    end = time.monotonic() + 20
    while worker.active or store.get_run(run_id)["state"] != "waiting" or worker._idle != 1:
        assert time.monotonic() < end
        time.sleep(0.01)
    assert len(worker.warm) == 0  # an hour's sleep costs a row, not a parked thread (its thread is idle)
    worker.shutdown(grace=1)
    assert not worker.threads


def _threads(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("Threads:")[1].split()[0])


@pytest.mark.slow
def test_sigkill_a_worker_while_a_warm_run_is_parked_then_another_takes_it_over(fm):
    fm.write("sig.star", SIGNALS)
    run_id = fm("start", "sig.star", "-a", "n:=3").stdout.strip()
    w1 = fm.spawn("worker", env={"FLOWMETAL_WARM": "16"})
    fm.wait_state(run_id, "waiting")
    assert fm("signal", run_id, "go", "0").returncode == 0
    end = time.time() + 20
    while time.time() < end and not (fm.run_row(run_id)["state"] == "waiting" and len(fm.journal(run_id)) == 4):
        time.sleep(0.02)
    assert len(fm.journal(run_id)) == 4  # now, wait_signal (0), now, wait_signal (open)
    time.sleep(0.3)
    assert _threads(w1.pid) >= 3  # main, heartbeat and the parked run's evaluation
    os.killpg(w1.pid, signal.SIGKILL)
    w1.wait()
    assert fm.run_row(run_id)["state"] == "waiting"  # parked: nothing of it was running
    w2 = fm.spawn("worker", env={"FLOWMETAL_WARM": "16"})
    assert fm("signal", run_id, "go", "1").returncode == 0
    fm.wait_state(run_id, "waiting", timeout=20)
    end = time.time() + 20
    while time.time() < end and len(fm.journal(run_id)) < 6:
        time.sleep(0.02)
    assert fm("signal", run_id, "go", "2").returncode == 0
    row = fm.wait_state(run_id, "completed", timeout=30)
    assert json.loads(row["result"]) == [0, 1, 2]
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["now", "wait_signal"] * 3
    assert not any(e["reexecuted"] for e in journal)
    os.killpg(w2.pid, signal.SIGTERM)  # drains and exits 0
    assert w2.wait(30) == 0
