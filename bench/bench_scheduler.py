"""Scheduler cost (issue 6). Prints figures; asserts nothing.

    python3 bench/bench_scheduler.py [--seconds 20] [--schedules 10000] [--fast 100] [--files 100]

A workspace of `--files` .star files declaring `--schedules` schedules in
all: `--fast` of them fire every second (`* * * * * *`, overlap "allow"),
the rest are daily jobs that stay idle during the bench. The daemon's own
loop (`Daemon._loop`: mtime polling every second, ticks at the heap's next due
time, follow-ups every 0.5 s) runs for `--seconds` of real time with the real
clock. A "null worker" thread marks created runs completed twice a second, so
the scheduler's follow-up queries see a realistic number of open fires; runs
are not executed (that is the worker's cost, measured by bench_journal.py).

Reported:
- load: `flowmetal check` of the files plus the first reconcile (heap built
  for every schedule);
- fire latency: from the nominal fire time to the commit of the transaction
  that created the run row (the "fire" event is emitted after that commit),
  median and p99 over every fire;
- scheduler CPU seconds per wall second: CPU time of the scheduler thread
  alone (time.thread_time), and of the whole process for comparison.
"""

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import SqliteStore, daemon_class


def workspace(n_schedules, n_fast, n_files):
    root = Path(tempfile.mkdtemp(prefix="flowmetal-bench-sched-"))
    (root / ".flowmetal").mkdir()
    per_file = -(-n_schedules // n_files)
    made = 0
    for f in range(n_files):
        lines = ["def job(i = 0):", "    return i", ""]
        for _ in range(per_file):
            if made >= n_schedules:
                break
            if made < n_fast:
                lines.append(f'schedule(name = "fast-{made}", cron = "* * * * * *", run = job, '
                             f'args = {{"i": {made}}}, overlap = "allow")')
            else:  # daily, at a minute that is not now: idle during the bench
                hour = (time.gmtime().tm_hour + 12 + made % 6) % 24
                lines.append(f'schedule(name = "idle-{made}", cron = "{made % 60} {hour} * * *", run = job, '
                             f'args = {{"i": {made}}})')
            made += 1
        (root / f"jobs{f:03d}.star").write_text("\n".join(lines) + "\n")
    return root


class NullWorker:
    """What the daemon loop needs of a worker (a wakeup event); runs are completed in bulk."""

    def __init__(self, db):
        self.wakeup = threading.Event()
        self.stop = threading.Event()
        self.db = db
        self.thread = threading.Thread(target=self._complete, daemon=True)
        self.thread.start()

    def _complete(self):
        store = SqliteStore(self.db)
        while not self.stop.wait(0.5):
            now = time.time()
            store.x("UPDATE runs SET state = 'completed', started_at = ?, ended_at = ? WHERE state = 'pending'",
                    (now, now))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--fast", type=int, default=100)
    ap.add_argument("--files", type=int, default=100)
    opts = ap.parse_args()

    root = workspace(opts.schedules, opts.fast, opts.files)
    db = root / ".flowmetal" / "flowmetal.db"
    store = SqliteStore(db)
    fires = []

    def emit(kind, **f):
        if kind == "fire":
            fires.append((f["fire_time"], f["created_at"], time.time()))

    daemon = daemon_class()(store, root, [root], emit=emit)
    t0 = time.perf_counter()
    daemon.reload()
    load = time.perf_counter() - t0
    print(f"{opts.schedules} schedules in {opts.files} files ({opts.fast} every second): "
          f"check + reconcile + heap {load:.2f}s")
    t0 = time.perf_counter()
    daemon.reload()
    print(f"reconcile again, nothing changed: {time.perf_counter() - t0:.2f}s")

    worker = NullWorker(db)
    stopper = threading.Timer(opts.seconds, daemon.request_stop)
    started = time.time()
    wall0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
    stopper.start()
    daemon._loop(worker)
    wall = time.perf_counter() - wall0
    cpu, proc = time.thread_time() - cpu0, time.process_time() - proc0
    worker.stop.set()

    catchup = [f for f in fires if f[0] < started]  # fires missed while loading, caught up at the first tick
    fires = [f for f in fires if f[0] >= started]
    commit = [(done - nominal) * 1000 for nominal, _, done in fires]
    decided = [(created - nominal) * 1000 for nominal, created, _ in fires]
    expected = opts.fast * int(opts.seconds)
    print(f"fires due during the run: {len(fires)} in {wall:.1f}s (about {expected} expected); "
          f"{len(catchup)} catch-up fires for the loading time at the first tick")
    if fires:
        print(f"fire latency, nominal -> run row committed: median {statistics.median(commit):.1f} ms, "
              f"p99 {percentile(commit, 99):.1f} ms, max {max(commit):.1f} ms")
        print(f"  (nominal -> tick started: median {statistics.median(decided):.1f} ms, "
              f"p99 {percentile(decided, 99):.1f} ms)")
    print(f"scheduler thread CPU: {cpu / wall:.3f} CPU s per wall s; whole process {proc / wall:.3f}")
    missed = store.x("SELECT count(*) FROM fires WHERE action != 'started'").fetchone()[0]
    print(f"fires not started (missed/skipped): {missed}")


if __name__ == "__main__":
    main()
