"""Journal throughput and replay cost (issue 3). Prints figures; asserts nothing.

    python3 bench/bench_journal.py

Each figure is compared with raw SQLite commits per second measured in the
same process with the store's pragmas, since these machines are noisy.
"""

from common import Bench, raw_commits_per_second

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


def main():
    b = Bench()
    raw = raw_commits_per_second()
    print(f"raw SQLite commits/s (WAL, synchronous NORMAL): {raw:,.0f}")

    n = 3000
    run = b.start(b.workflow("now.star", NOW_LOOP), args={"n": n})
    state, secs = b.execute(run)
    assert state == "completed", state
    per_s = n / secs
    print(f"journaled now() effects/s: {per_s:,.0f}  -> one now() costs {raw / per_s:.2f} raw commits")

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
