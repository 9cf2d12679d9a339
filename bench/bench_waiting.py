"""Waiting costs (issue 4). Prints figures; asserts nothing.

    python3 bench/bench_waiting.py

- signal latency: time from `flowmetal signal` (the CLI, a separate process)
  to the waiting run's next effect, under one `flowmetal worker` process;
  median and p90 over 50 signals.
- resume cost: re-executing a run with 1,000 journal entries after it was
  evicted from memory (every resume replays from the journal), compared with
  raw SQLite commits per second measured in the same process.
"""

import statistics
import subprocess
import sys
import time

from common import Bench, journaled_now_seconds, raw_commits_per_second

SIGNALS = """
def main(n):
    for i in range(n):
        wait_signal("go")
        now()
    return n
"""

LONG = """
def main(n):
    for i in range(n):
        now()
    sleep("1h")
"""


def cli(b, *args, background=False):
    env = b.env()
    cmd = [sys.executable, "-m", "flowmetal", *args]
    if background:
        return subprocess.Popen(cmd, env=env, cwd=b.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, env=env, cwd=b.dir, capture_output=True, text=True, check=True)


def signal_latency(b, n=50):
    run = b.start(b.workflow("signals.star", SIGNALS), args={"n": n})
    worker = cli(b, "worker", "--concurrency", "2", background=True)
    latencies, committed = [], []
    try:
        for i in range(n):
            while b.store.get_run(run)["state"] != "waiting":
                time.sleep(0.005)
            sent = time.time()
            cli(b, "signal", run, "go", str(i))
            expected_seq = 2 * i + 2  # wait_signal, now, wait_signal, now, ...
            while True:
                j = b.store.journal(run)
                if len(j) >= expected_seq:
                    effect_at = journaled_now_seconds(j[expected_seq - 1])
                    latencies.append(effect_at - sent)
                    sent_at = b.store.signals(run)[i]["sent_at"]
                    committed.append(effect_at - sent_at)
                    break
                time.sleep(0.002)
    finally:
        worker.terminate()
        worker.wait()
    return latencies, committed


def summary(values):
    values = sorted(values)
    return (f"median {statistics.median(values) * 1000:.0f} ms, p90 {values[int(len(values) * 0.9)] * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms")


def main():
    b = Bench()
    raw = raw_commits_per_second()
    print(f"raw SQLite commits/s (WAL, synchronous NORMAL): {raw:,.0f}")

    lat, committed = signal_latency(b)
    print("signal -> next effect, 50 signals through the CLI and one worker process:")
    print(f"  from running `flowmetal signal` (includes its Python start-up): {summary(lat)}")
    print(f"  from the signal's commit to the run's next effect:             {summary(committed)}")

    run = b.start(b.workflow("long.star", LONG), args={"n": 1000})
    state, first = b.execute(run)
    assert state == "waiting", state
    times = []
    for _ in range(5):
        state, secs = b.execute(run)
        assert state == "waiting", state
        times.append(secs)
    med = statistics.median(times)
    print(f"resume after eviction, 1,000 journal entries: median {med * 1000:.1f} ms over 5 "
          f"(= {med * raw:,.0f} raw commits; first execution {first * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
