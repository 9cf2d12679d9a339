"""Journal throughput and replay cost (issue 3). Prints figures; asserts nothing.

    python3 bench/bench_journal.py

Each figure is compared with raw SQLite commits per second measured in the
same process with the store's pragmas, since these machines are noisy.
"""

import statistics
import time

from common import Bench, RawCommits, raw_commits_per_second

NOW_LOOP = """
def main(n):
    for i in range(n):
        now()
    return n
"""

SH_LOOP = """
def main(n):
    for i in range(n):
        sh("true")
    return n
"""

REPLAY = """
def main(n):
    for i in range(n):
        now()
    sleep("1h")
    return n
"""


def journal_row_insert_seconds(store, run_id, owner, first_seq, n):
    """The store's own journal INSERT, committed alone, for one run: the floor under an effect."""
    t0 = time.perf_counter()
    for seq in range(first_seq, first_seq + n):
        store.insert_journal({"run_id": run_id, "seq": seq, "builtin": "now", "args": "{}", "digest": "0" * 64,
                              "status": "completed", "result": "1795914454.59", "error": None, "data": None,
                              "started_at": 1.0, "ended_at": 1.0}, owner)
    return (time.perf_counter() - t0) / n


def now_cost(b, blocks=30, n=400, groups=5):
    """One journaled now() in raw commits. Measured in alternating blocks so both sides see
    the same machine: a block of n raw commits, a run of 0 effects (the fixed cost of a run:
    loading, claiming, ending) and a run of n effects, whose difference is n effects.

    A WAL checkpoint every 1,000 pages makes single commits lumpy, so figures are ratios of
    totals over many blocks, never per block. Returns (ratio, seconds per effect, the journal
    row's own INSERT in raw commits, ratios of `groups` consecutive groups of blocks)."""
    raw = RawCommits()
    path = b.workflow("now.star", NOW_LOOP)
    base, fixed, runs, floor = [], [], [], []
    for block in range(blocks):
        raw.seconds_per_commit(50)  # untimed: the runs below are timed warm (after the n=0 run), so is this
        base.append(raw.seconds_per_commit(n) * n)
        fixed.append(b.execute(b.start(path, args={"n": 0}))[1])
        state, secs = b.execute(b.start(path, args={"n": n}))
        assert state == "completed", state
        runs.append(secs)
        floor_run = b.start(path, args={"n": 0})  # the newest run, as the measured ones were
        b.claim(floor_run)
        floor.append(journal_row_insert_seconds(b.store, floor_run, b.owner, 1, n) * n)
    fixed_cost = statistics.median(fixed)  # no lumpy part: a median is its best estimate

    def ratio(sl):
        return (sum(runs[sl]) - fixed_cost * len(runs[sl])) / sum(base[sl])

    size = blocks // groups
    per_group = [ratio(slice(g * size, (g + 1) * size)) for g in range(groups)]
    per_effect = (sum(runs) - fixed_cost * blocks) / (blocks * n)
    return ratio(slice(None)), per_effect, sum(floor) / sum(base), per_group, blocks * n / sum(base)


def main():
    b = Bench()
    raw = raw_commits_per_second()
    print(f"raw SQLite commits/s (WAL, synchronous NORMAL): {raw:,.0f}")

    ratio, per_effect, floor, per_group, raw_during = now_cost(b)
    print(f"journaled now() effects/s: {1 / per_effect:,.0f}, raw commits/s alongside: {raw_during:,.0f} -> "
          f"one now() costs {ratio:.2f} raw commits (12,000 of each, alternating in blocks of 400; "
          f"by fifths: {', '.join(f'{r:.2f}' for r in per_group)})")
    print(f"  of which the journal row's own INSERT commit costs {floor:.2f} raw commits "
          f"(the rest is the Starlark call and the gate)")

    n = 300
    run = b.start(b.workflow("sh.star", SH_LOOP), args={"n": n})
    state, secs = b.execute(run)
    assert state == "completed", state
    per_s = n / secs
    print(f"journaled sh(\"true\") effects/s: {per_s:,.0f}  -> one sh() costs {raw / per_s:.1f} raw commits")

    n = 10_000
    run = b.start(b.workflow("replay.star", REPLAY), args={"n": n})
    state, first = b.execute(run)
    assert state == "waiting", state
    state, secs = b.execute(run)
    assert state == "waiting", state
    print(f"replay of a run with {n:,} journal entries: {secs:.3f} s "
          f"({n / secs:,.0f} entries/s; first execution took {first:.2f} s)")


if __name__ == "__main__":
    main()
