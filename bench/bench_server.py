"""The HTTP server's costs (issue 13). Prints figures; asserts nothing.

    python3 bench/bench_server.py            # 5 blocks of 60 runs by 8 clients, 100 callbacks
    python3 bench/bench_server.py --quick    # 2 blocks of 20 runs, 20 callbacks: checks the script works (< 60 s)

Through a real `flowmetal serve` on 127.0.0.1 (a subprocess: API, worker and
scheduler in one process, default --concurrency 4), with httpx clients:

- runs/s: `POST /api/v1/runs` of a one-effect workflow (`now()`), then the
  long-polled `GET /runs/{id}/result?wait=60` until it has completed, by C client
  threads at once; runs divided by the wall time from the first POST to the last
  result. Beside it the engine's own figure in this process: the same workflow
  created and executed by the library (`create_run`, then the runner), one after
  another, on a store of its own. The two alternate in blocks; the ratio is taken
  per block and the median printed.
- callback -> resumed: a run waits in `wait_callback(callback())`. Its URL is masked
  wherever the run's text is stored (it is a capability), so the bench derives it as the
  server does: the journaled callback entry gives the base URL and the position, the
  server secret (`.flowmetal/secret`) the token. Measured: the time from POSTing the URL to
  the long-polled result saying the run has completed, p50 and p99. Beside it the
  engine's figure: `complete_callback` (engine/deferred.py, which calls
  complete_effect) in this process on a waiting run, to the run's completion by a
  Worker in a thread of this process, polled every 0.5 ms.

Each server figure is printed as a ratio to the in-process one measured in the
same process: what HTTP, JSON, authentication and a second process cost.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from common import Bench

ONE = "def main(i = 0):\n    return now()\n"
HOOK = """
def main():
    return wait_callback(callback())
"""


class Server:
    """A `flowmetal serve` subprocess on a loopback port, with a write token."""

    def __init__(self, files):
        self.dir = Path(tempfile.mkdtemp(prefix="flowmetal-bench-serve-"))
        (self.dir / ".flowmetal").mkdir()
        for name, text in files.items():
            (self.dir / name).write_text(text)
        self.env = {**os.environ, "FLOWMETAL_DB": str(self.dir / ".flowmetal" / "flowmetal.db"),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src" / "python")}
        self.env.pop("FLOWMETAL_SYNC", None)
        made = subprocess.run([sys.executable, "-m", "flowmetal", "token", "create", "bench", "--scope", "write"],
                              cwd=self.dir, env=self.env, capture_output=True, text=True, check=True)
        self.token = made.stdout.strip()
        self.err = self.dir / "serve.err"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "flowmetal", "serve", "--listen", "127.0.0.1:0",
                                          "--no-scheduler", "."], cwd=self.dir, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.err.read_text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise SystemExit(f"bench: flowmetal serve did not start:\n{self.err.read_text()}")

    def client(self):
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=90)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_and_wait(client, target, args=None):
    resp = client.post("/api/v1/runs", json={"target": target, "args": args or {}})
    resp.raise_for_status()
    run_id = resp.json()["id"]
    while True:
        done = client.get(f"/api/v1/runs/{run_id}/result", params={"wait": 60})
        if done.status_code == 200:
            if done.json()["state"] != "completed":
                raise SystemExit(f"bench: run {run_id} ended {done.json()['state']}: {done.json().get('error')}")
            return run_id


def server_runs_per_second(srv, n, clients):
    local = threading.local()

    def one(i):
        if not hasattr(local, "c"):
            local.c = srv.client()
        start_and_wait(local.c, "one.star:main", {"i": i})

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(min(clients, n))))  # warm: connections, the worker's loaded module
        t0 = time.perf_counter()
        list(pool.map(one, range(n)))
        return n / (time.perf_counter() - t0)


def inprocess_runs_per_second(b, n):
    path = b.workflow("one.star", ONE)
    for i in range(3):
        b.execute(b.start(path, args={"i": i}))  # warm
    t0 = time.perf_counter()
    for i in range(n):
        state, _ = b.execute(b.start(path, args={"i": i}))
        if state != "completed":
            raise SystemExit(f"bench: an in-process run ended {state}")
    return n / (time.perf_counter() - t0)


def derive_url(db_dir, run_id, entry):
    """The URL of the callback journaled as `entry`, as the gate derives it (engine/gate.py)."""
    from flowmetal.engine.deferred import callback_token, server_secret

    token = callback_token(server_secret(db_dir), run_id, entry["seq"])
    return f"{entry['result']['base']}/callbacks/{token}", token


def callback_url(client, db_dir, run_id):
    """The run's callback URL, once it waits for it."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] == "waiting":
            entry = next(e for e in run["journal"] if e["builtin"] == "callback")
            return derive_url(db_dir, run_id, entry)[0]
        time.sleep(0.002)
    raise SystemExit(f"bench: run {run_id} did not come to wait for its callback")


def server_callback_latencies(srv, n):
    out = []
    with srv.client() as c, httpx.Client(timeout=30) as anon:
        for i in range(n + 2):
            run_id = c.post("/api/v1/runs", json={"target": "hook.star:main"}).json()["id"]
            url = callback_url(c, srv.dir / ".flowmetal", run_id)
            t0 = time.perf_counter()
            posted = anon.post(url, json={"i": i})
            if posted.status_code != 200:
                raise SystemExit(f"bench: the callback answered {posted.status_code}: {posted.text}")
            done = c.get(f"/api/v1/runs/{run_id}/result", params={"wait": 30})
            elapsed = time.perf_counter() - t0
            if done.status_code != 200 or done.json()["result"] != {"i": i}:
                raise SystemExit(f"bench: the run did not complete with the payload: {done.text}")
            if i >= 2:  # the first two warm up
                out.append(elapsed)
    return out


def inprocess_callback_latencies(b, n):
    from flowmetal.engine.deferred import complete_callback  # (the in-process baseline)

    path = b.workflow("hook.star", HOOK)
    stop = b.worker(concurrency=4)
    out = []
    try:
        for i in range(n + 2):
            run_id = b.start(path)
            while b.get_run(run_id)["state"] != "waiting":
                time.sleep(0.0005)
            entry = next(e for e in b.store.journal(run_id) if e["builtin"] == "callback")
            _, token = derive_url(os.path.dirname(os.path.abspath(b.store.path)), run_id, {"seq": entry["seq"], "result": {"base": ""}})
            t0 = time.perf_counter()
            done = complete_callback(b.store, token, {"i": i})
            if not done.ok:
                raise SystemExit(f"bench: complete_callback: {done.message}")
            b._worker.wakeup.set()
            while b.get_run(run_id)["state"] != "completed":
                time.sleep(0.0005)
            if i >= 2:
                out.append(time.perf_counter() - t0)
    finally:
        stop()
    return out


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    parser.add_argument("--runs", type=int, help="runs for the throughput, over all blocks (default 300, quick 40)")
    parser.add_argument("--clients", type=int, default=8, help="client threads for the throughput")
    parser.add_argument("--callbacks", type=int, help="callbacks timed (default 100, quick 20)")
    opts = parser.parse_args()
    runs = opts.runs or (40 if opts.quick else 300)
    callbacks = opts.callbacks or (20 if opts.quick else 100)

    b = Bench()
    srv = Server({"one.star": ONE, "hook.star": HOOK})
    try:
        # in interleaved blocks (the machine is shared and noisy): a ratio per block, then their median
        blocks, per = (2, runs // 2) if opts.quick else (5, runs // 5)
        locals_, remotes = [], []
        for _ in range(blocks):
            locals_.append(inprocess_runs_per_second(b, per))
            remotes.append(server_runs_per_second(srv, per, opts.clients))
        ratios = [r / lo for r, lo in zip(remotes, locals_)]
        print(f"runs of a one-effect workflow, start to completed ({blocks} blocks of {per} runs, median and range):")
        print(f"  in-process (create_run + execute, one after another):  {statistics.median(locals_):7.1f} runs/s "
              f"({min(locals_):.1f}-{max(locals_):.1f})")
        print(f"  API (POST /runs + long-polled result, {opts.clients} httpx clients): "
              f"{statistics.median(remotes):7.1f} runs/s ({min(remotes):.1f}-{max(remotes):.1f})")
        print(f"  ratio API / in-process: {statistics.median(ratios):.2f} x ({min(ratios):.2f}-{max(ratios):.2f})")

        base = inprocess_callback_latencies(b, callbacks)
        lat = server_callback_latencies(srv, callbacks)
        print(f"callback -> run completed ({callbacks} callbacks, one at a time):")
        print(f"  in-process (complete_callback, a Worker thread): p50 {pct(base, 50) * 1000:7.2f} ms"
              f"   p99 {pct(base, 99) * 1000:7.2f} ms")
        print(f"  API (POST the URL, long-polled result):          p50 {pct(lat, 50) * 1000:7.2f} ms"
              f"   p99 {pct(lat, 99) * 1000:7.2f} ms")
        print(f"  ratio API / in-process: p50 {pct(lat, 50) / pct(base, 50):.1f} x, "
              f"p99 {pct(lat, 99) / pct(base, 99):.1f} x  (mean {statistics.mean(lat) * 1000:.2f} ms vs "
              f"{statistics.mean(base) * 1000:.2f} ms)")
    finally:
        srv.close()
        b.close()


if __name__ == "__main__":
    main()
