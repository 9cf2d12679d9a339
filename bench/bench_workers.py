"""Outside workers: tasks claimed and completed per second by one worker.

    python3 bench/bench_workers.py [--quick] [--tasks N]

Each figure drains N waiting `task()`s of real runs (each run executed once, untimed, so
that it waits on its task: a real `deferred` row made by the gate):

- **in-process**: the engine's own figure, `engine/tasks.py`'s claim() and finish() (what
  the /tasks routes call) in a loop in this process, on the same store;
- **worker.sh**: `examples/workers/worker.sh QUEUE cat` (curl and jq, the command echoes
  the payload) against a real `flowmetal serve --no-worker --no-scheduler` on 127.0.0.1,
  timed from its first completed task to its last (the database's completed_at: the
  worker's start-up is not counted);
- **worker.py**: `examples/workers/worker.py QUEUE` (httpx, handle() in Python), the same way.

Each HTTP figure is printed with its ratio to the in-process one. The server executes no
runs (--no-worker), so the figures are the protocol's: claim, complete, and the long-poll.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import Bench

from flowmetal.clock import SYSTEM
from flowmetal.engine import tasks

REPO = Path(__file__).resolve().parents[1]
WORKERS = REPO / "examples" / "workers"
FLOW = 'def main(i):\n    return task(QUEUE, {"i": i})\n'


def seed(bench, queue, n):
    """N runs, each waiting on one task of `queue`."""
    path = bench.workflow(f"{queue}.star", FLOW.replace("QUEUE", repr(queue)))
    ids = bench.start_many(path, [{"i": i} for i in range(n)])
    for run_id in ids:
        state, _ = bench.execute(run_id)
        assert state == "waiting", state
    return ids


def done(bench, queue):
    return bench.store.x("SELECT count(*) FROM deferred WHERE queue = ? AND state = 'completed'",
                         (queue,)).fetchone()[0]


def in_process(bench, queue, n):
    t0 = time.perf_counter()
    for _ in range(n):
        task = tasks.claim(bench.store, [queue], SYSTEM)
        outcome = tasks.finish(bench.store, task["id"], task["lease_token"], SYSTEM, result=task["payload"])
        assert outcome.outcome == "completed", outcome
    elapsed = time.perf_counter() - t0
    assert done(bench, queue) == n
    return n / elapsed


class Server:
    def __init__(self, bench):
        env = {**bench.env(), "PYTHONPATH": str(REPO / "src" / "python")}
        self.err = bench.dir / "serve.err"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flowmetal", "serve", "--listen", "127.0.0.1:0", "--no-worker",
                 "--no-scheduler"], cwd=bench.dir, env=env, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        end = time.time() + 30
        while time.time() < end:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.err.read_text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"flowmetal serve did not start: {self.err.read_text()}")
            time.sleep(0.02)
        else:
            raise SystemExit("flowmetal serve did not start within 30 s")
        made = subprocess.run([sys.executable, "-m", "flowmetal", "token", "create", "bench", "--scope", "write"],
                              cwd=bench.dir, env=env, capture_output=True, text=True, check=True)
        self.token = made.stdout.strip()
        self.env = {**env, "FLOWMETAL_URL": self.url, "FLOWMETAL_TOKEN": self.token}

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def with_worker(bench, server, queue, n, command, timeout):
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        while done(bench, queue) < n:
            if proc.poll() is not None:
                raise SystemExit(f"{command[0]} stopped: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"{command[0]}: only {done(bench, queue)} of {n} tasks in {timeout} s")
            time.sleep(0.005)
        first, last = bench.store.x("SELECT min(completed_at), max(completed_at) FROM deferred WHERE queue = ?",
                                    (queue,)).fetchone()
        return (n - 1) / (last - first)  # from the first completion: the worker's start-up is not counted
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer tasks: finishes in well under a minute")
    ap.add_argument("--tasks", type=int, default=None, help="tasks per figure (default 300; --quick 60)")
    args = ap.parse_args()
    n = args.tasks or (60 if args.quick else 300)
    bench = Bench()
    try:
        for queue in ("inproc", "sh", "py"):
            seed(bench, queue, n)
        base = in_process(bench, "inproc", n)
        server = Server(bench)
        try:
            sh = with_worker(bench, server, "sh", n, [str(WORKERS / "worker.sh"), "sh", "cat"], timeout=120)
            py = with_worker(bench, server, "py", n, [sys.executable, str(WORKERS / "worker.py"), "py"], timeout=120)
        finally:
            server.stop()
    finally:
        bench.close()
    print(f"tasks claimed and completed per second, {n} tasks each, one worker (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  {'in-process: engine/tasks.py claim() + finish()':52} {base:9.1f}/s   1.000")
    print(f"  {'worker.sh (curl + jq, command cat) over HTTP':52} {sh:9.1f}/s   {sh / base:.4f}")
    print(f"  {'worker.py (httpx, handle() in Python) over HTTP':52} {py:9.1f}/s   {py / base:.4f}")


if __name__ == "__main__":
    main()
