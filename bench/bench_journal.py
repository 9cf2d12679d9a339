"""Journal throughput and replay cost (issue 3). Prints figures; asserts nothing.

    python3 bench/bench_journal.py

Each figure is compared with raw SQLite commits per second measured in the
same process with the store's pragmas, since these machines are noisy.
"""

import statistics
import time

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


def journal_row_insert_seconds(b, n=2000):
    """One committed INSERT of a journal-shaped row into the store's own table, no Flowmetal code."""
    conn = b.store.conn
    conn.execute("INSERT OR IGNORE INTO runs (id, file, function, args, state, created_at) "
                 "VALUES ('floor', 'f', 'main', '{}', 'completed', 0)")
    start = conn.execute("SELECT coalesce(max(seq), 0) FROM journal WHERE run_id = 'floor'").fetchone()[0]
    t0 = time.perf_counter()
    for i in range(start + 1, start + n + 1):
        conn.execute("INSERT INTO journal (run_id, seq, builtin, args, digest, status, result, started_at, ended_at)"
                     " VALUES ('floor', ?, 'now', '{}', '0123456789abcdef', 'completed', '1795914454.59', 1.0, 1.0)",
                     (i,))
    return (time.perf_counter() - t0) / n


def main():
    b = Bench()
    raw = raw_commits_per_second()
    print(f"raw SQLite commits/s (WAL, synchronous NORMAL): {raw:,.0f}")

    # Interleaved trials, median ratio: these machines are noisy.
    path, n, ratios, per_effect, floor = b.workflow("now.star", NOW_LOOP), 3000, [], [], []
    for _ in range(5):
        base = raw_commits_per_second(0.5)
        run = b.start(path, args={"n": n})
        state, secs = b.execute(run)
        assert state == "completed", state
        ratios.append(base * secs / n)
        per_effect.append(secs / n)
        floor.append(base * journal_row_insert_seconds(b))
    print(f"journaled now() effects/s: {1 / statistics.median(per_effect):,.0f} -> one now() costs "
          f"{statistics.median(ratios):.2f} raw commits (median of 5 interleaved trials: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"  of which the journal row's own INSERT commit costs {statistics.median(floor):.2f} raw commits "
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
