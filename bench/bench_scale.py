"""Costs that should grow with the work, not faster (issue 17). Prints figures; asserts nothing.

    python3 bench/bench_scale.py [--quick] [--only drain,fanout,wake,signals,children] [--concurrency 4]

Each figure is a ratio of a large case to a small one measured in this process, next
to issue 17's target; `--quick` runs smaller cases with the same size ratios (to check
the script, not for figures):

                                              full sizes      --quick       target
- drain: N queued one-effect runs, drained    1,000 / 10,000  200 / 2,000   per run <= 1.5x
  by one Worker; cost per run
- fan-out: one run spawning N children        1,000 / 10,000  200 / 2,000   per child <= 1.5x
  (one effect each) and waiting for all
- wake: N runs sleeping until one instant,    1,000 / 10,000  200 / 2,000   time <= 12x
  from that instant to the last one ended
- signals: a run that waits for a signal K    250 / 1,000     50 / 200      time <= 4.5x
  times in a loop (wait_signal, now())
- children: a run that spawns K children one  100 / 300       50 / 150      time <= 4.5x
  after another, waiting for each

The first three run through a Worker in this process (a thread, `--concurrency`
executions at once), timed from the moment the Worker starts (or the timers expire) to
the last run's ended_at in the store. The last two are printed twice: "worker" drives
the run with a Worker as `flowmetal worker` would (signals are sent from this process as
soon as the run waits again), and is what issue 17's warm waits will change; "replay"
executes the run here once per wait, so every resume replays its journal (the cost
with a warm cache disabled), and counts only the waiting run's own engine time.
bench_waiting.py measures a single resume of a long journal and the signal latency
through the CLI.
"""

import argparse
import statistics
import sys
import time

from bench_waiting import SIGNALS
from common import Bench

ONE_EFFECT = """
def main(i):
    now()
    return i
"""

FANOUT = """
def child(i):
    now()
    return i

def main(n):
    return len(wait([spawn(child, i) for i in range(n)]))
"""

SLEEPER = """
def main(at):
    sleep(max(0, at - now()))
    return now()
"""

SEQUENTIAL = """
def child(i):
    now()
    return i

def main(n):
    total = 0
    for i in range(n):
        total += wait(spawn(child, i)).value
    return total
"""

SIZES = {  # name: (full small, full large, quick small, quick large, target, what the target bounds)
    "drain": (1_000, 10_000, 200, 2_000, 1.5, "per-run cost"),
    "fanout": (1_000, 10_000, 200, 2_000, 1.5, "per-child cost"),
    "wake": (1_000, 10_000, 200, 2_000, 12.0, "total time"),
    "signals": (250, 1_000, 50, 200, 4.5, "engine time"),
    "children": (100, 300, 50, 150, 4.5, "engine time"),
}
TIMEOUT = 3600.0


def drain(n, concurrency):
    """Seconds per run to drain n queued one-effect runs."""
    b = Bench()
    try:
        b.start_many(b.workflow("one.star", ONE_EFFECT), [{"i": i} for i in range(n)])
        t0 = time.time()
        stop = b.worker(concurrency)
        try:
            b.wait_for_states({"completed": n}, TIMEOUT)
        finally:
            stop()
        return (b.last_ended() - t0) / n
    finally:
        b.close()


def fanout(n, concurrency):
    """Seconds per child for one run that spawns n children and waits for all of them."""
    b = Bench()
    try:
        b.start(b.workflow("fanout.star", FANOUT), args={"n": n})
        t0 = time.time()
        stop = b.worker(concurrency)
        try:
            b.wait_for_states({"completed": n + 1}, TIMEOUT)
        finally:
            stop()
        return (b.last_ended() - t0) / n
    finally:
        b.close()


def wake(n, concurrency, per_run_guess):
    """Seconds from the instant n sleeping runs' timers expire to the last run's end.

    The runs sleep until one instant chosen ahead: late enough for all of them to be
    asleep by then (estimated from the drain's cost per run; tried again with twice the
    margin if some run was not asleep in time)."""
    margin = max(1.0, 3 * n * per_run_guess)
    for _ in range(3):
        b = Bench()
        try:
            path = b.workflow("sleeper.star", SLEEPER)
            at = time.time() + 0.5 + n * 0.001 + margin
            b.start_many(path, [{"at": at} for _ in range(n)])
            stop = b.worker(concurrency)
            try:
                # all asleep, or too late for that (a run with a second or less left waits in
                # place, running, and is never seen waiting): then try again with more margin
                while b.states().get("waiting", 0) < n and time.time() < at - 1.0:
                    time.sleep(0.02)
                asleep = time.time() if b.states().get("waiting", 0) >= n else at
                if asleep < at - 0.05:
                    b.wait_for_states({"completed": n}, TIMEOUT)
                    return b.last_ended() - at
            finally:
                stop()
        finally:
            b.close()
        margin *= 2
    raise SystemExit(f"bench: {n} runs could not all be put to sleep before their timers")


def signals_worker(k, concurrency, warm=None):
    """Wall seconds for a run to wait for k signals one after another under a Worker
    (`warm`: its warm waits, engine/warm.py; 0 turns them off)."""
    b = Bench()
    try:
        run = b.start(b.workflow("signals.star", SIGNALS), args={"n": k})
        stop = b.worker(concurrency, warm=warm)
        try:
            t0 = time.perf_counter()
            for i in range(k):
                # The previous signal consumed first, then the run waiting: it waits for this one.
                while b.signal_pending(run, "go") or b.get_run(run)["state"] != "waiting":
                    time.sleep(0.0005)
                b.signal(run, "go", str(i))
            b.wait_for_states({"completed": 1}, TIMEOUT, poll=0.001)
            return time.perf_counter() - t0
        finally:
            stop()
    finally:
        b.close()


def signals_replay(k):
    """Engine seconds of the run, executed here once per signal (every resume replays)."""
    b = Bench()
    try:
        run = b.start(b.workflow("signals.star", SIGNALS), args={"n": k})
        state, total = b.execute(run)
        for i in range(k):
            assert state == "waiting", state
            b.signal(run, "go", str(i))
            state, secs = b.execute(run)
            total += secs
        assert state == "completed", state
        return total
    finally:
        b.close()


def children_worker(k, concurrency, warm=None):
    """Wall seconds for a run that spawns k children one after another, under a Worker
    (the children's own executions included)."""
    b = Bench()
    try:
        b.start(b.workflow("seq.star", SEQUENTIAL), args={"n": k})
        t0 = time.time()
        stop = b.worker(concurrency, warm=warm)
        try:
            b.wait_for_states({"completed": k + 1}, TIMEOUT, poll=0.005)
        finally:
            stop()
        return b.last_ended() - t0
    finally:
        b.close()


def children_replay(k):
    """Engine seconds of the waiting run alone, executed here once per child; each child is
    executed here too (not counted) as soon as it is spawned."""
    b = Bench()
    try:
        run = b.start(b.workflow("seq.star", SEQUENTIAL), args={"n": k})
        total = 0.0
        while True:
            state, secs = b.execute(run)
            total += secs
            if state != "waiting":
                break
            for child in b.children(run, state="pending"):
                b.execute(child)
        assert state == "completed", state
        return total
    finally:
        b.close()


def line(label, small_n, large_n, small, large, unit, target, what, linear=None):
    ratio = large / small
    verdict = "met" if ratio <= target else "not met"
    lin = f", linear {linear:g}x" if linear else ""
    print(f"  {label:34} {small_n:>6,}: {small * unit:9.3f}   {large_n:>6,}: {large * unit:9.3f}   "
          f"ratio {ratio:6.2f}x   target {what} <= {target:g}x{lin}  {verdict}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases (same size ratios), to check the script")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(SIZES))
    ap.add_argument("--concurrency", type=int, default=4, help="the Worker's executions at once (default 4)")
    opts = ap.parse_args()
    only = set(SIZES) if not opts.only else set(opts.only.split(","))
    unknown = only - set(SIZES)
    if unknown:
        ap.error(f"unknown bench {', '.join(sorted(unknown))}; choose from {','.join(SIZES)}")

    def sizes(name):
        full_s, full_l, quick_s, quick_l, target, what = SIZES[name]
        return (quick_s, quick_l, target, what) if opts.quick else (full_s, full_l, target, what)

    c = opts.concurrency
    print(f"Worker concurrency {c}{'; --quick sizes (not for figures)' if opts.quick else ''}")
    per_run = {}
    if "drain" in only or "wake" in only:
        s, l, target, what = sizes("drain")
        per_run = {s: drain(s, c), l: drain(l, c)}
        if "drain" in only:
            print("drain N queued one-effect runs, ms per run:")
            line("Worker", s, l, per_run[s], per_run[l], 1000, target, what)
    if "fanout" in only:
        s, l, target, what = sizes("fanout")
        print("fan-out: one run spawns N children (one effect each) and waits for all, ms per child:")
        line("Worker", s, l, fanout(s, c), fanout(l, c), 1000, target, what)
    if "wake" in only:
        s, l, target, what = sizes("wake")
        print("wake N runs whose timers expire together, s from the expiry to the last end:")
        line("Worker", s, l, wake(s, c, per_run.get(s, 0.01)), wake(l, c, per_run.get(l, 0.01)), 1, target, what,
             linear=l / s)
    if "signals" in only:
        s, l, target, what = sizes("signals")
        print("a run waits for K signals in a loop, s:")
        line("worker, warm waits (wall)", s, l, signals_worker(s, c), signals_worker(l, c), 1, target, what,
             linear=l / s)
        line("worker, warm off (wall)", s, l, signals_worker(s, c, warm=0), signals_worker(l, c, warm=0), 1,
             target, what, linear=l / s)
        line("replay every wait (engine time)", s, l, signals_replay(s), signals_replay(l), 1, target, what,
             linear=l / s)
    if "children" in only:
        s, l, target, what = sizes("children")
        print("a run waits for K children one after another, s:")
        line("worker, warm (wall, children incl.)", s, l, children_worker(s, c), children_worker(l, c), 1,
             target, what, linear=l / s)
        line("worker, warm off (wall, children)", s, l, children_worker(s, c, warm=0),
             children_worker(l, c, warm=0), 1, target, what, linear=l / s)
        line("replay every wait (engine time)", s, l, children_replay(s), children_replay(l), 1, target, what,
             linear=l / s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
