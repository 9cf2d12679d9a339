"""Waiting costs (issues 4 and 17). Prints figures; asserts nothing.

    python3 bench/bench_waiting.py [--quick] [--parked 200]

- signal latency: time from `flowmetal signal` (the CLI, a separate process)
  to the waiting run's next effect, under one `flowmetal worker` process;
  median and p90 over 50 signals.
- resume cost: re-executing a run with 1,000 journal entries after it was
  evicted from memory (every resume replays from the journal), compared with
  raw SQLite commits per second measured in the same process.
- warm waits (issue 17, engine/warm.py): a run waiting for 1,000 vs 250 signals
  in a loop, and one waiting for 300 vs 100 children one after another, under a
  Worker with warm waits on and off (the large/small ratio; targets <= 4.5x);
- memory per parked run: the growth of this process's RSS and threads while a
  Worker keeps `--parked` runs parked at a wait_signal, minus the same with warm
  waits off, per run.
"""

import argparse
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


PARKED = """
def main(i):
    state = {"i": i, "items": [str(j) for j in range(50)]}
    v = wait_signal("go")
    return [state["i"], v]
"""


def _status(field):
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0])


def parked_memory(n, warm):
    """(RSS KiB, threads) this process grows by while a Worker holds n runs waiting for a signal."""
    b = Bench()
    try:
        path = b.workflow("parked.star", PARKED)
        b.start_many(path, [{"i": i} for i in range(n)])
        rss0, threads0 = _status("VmRSS"), _status("Threads")
        stop = b.worker(4, warm=warm)
        try:
            b.wait_for_states({"waiting": n}, 600)
            time.sleep(0.5)  # the last ones park
            grown = _status("VmRSS") - rss0, _status("Threads") - threads0
            parked = len(b.last_worker.warm)
        finally:
            stop()
        return grown, parked
    finally:
        b.close()


def warm_figures(quick):
    from bench_scale import children_worker, signals_worker  # (bench_scale imports this module's SIGNALS)

    sig_s, sig_l, ch_s, ch_l = (50, 200, 30, 90) if quick else (250, 1000, 100, 300)
    print(f"warm waits: a Worker (concurrency 4), wall seconds{'; --quick sizes' if quick else ''}:")
    for label, fn, small, large in (("signals", signals_worker, sig_s, sig_l),
                                    ("children", children_worker, ch_s, ch_l)):
        for warm, name in ((None, "warm on "), (0, "warm off")):
            a, z = fn(small, 4, warm=warm), fn(large, 4, warm=warm)
            ratio = z / a
            print(f"  {label:8} {name} {small:>5}: {a:8.3f} s  {large:>5}: {z:8.3f} s  ratio {ratio:5.2f}x "
                  f"(linear {large / small:g}x, target <= 4.5x: {'met' if ratio <= 4.5 else 'not met'})")


def summary(values):
    values = sorted(values)
    return (f"median {statistics.median(values) * 1000:.0f} ms, p90 {values[int(len(values) * 0.9)] * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases, to check the script (< 60 s)")
    ap.add_argument("--parked", type=int, default=200, help="runs to park for the memory figure (default 200)")
    opts = ap.parse_args()
    n = 50 if opts.quick else opts.parked
    parked_memory(10, warm=10)  # warm-up: imports, the prelude, the first threads
    (cold_kb, cold_threads), _ = parked_memory(n, warm=0)
    (warm_kb, warm_threads), parked = parked_memory(n, warm=max(n, 1))
    print(f"memory per parked run ({parked} of {n} parked): {(warm_kb - cold_kb) / n:,.0f} KiB RSS, "
          f"{(warm_threads - cold_threads) / n:.2f} threads (warm {warm_kb:,} KiB, off {cold_kb:,} KiB in all)")
    warm_figures(opts.quick)
    if opts.quick:
        return
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
