"""The web view's page of a run with 10,000 journal entries, next to the API's time for the
same data (issue 14: the page loads in under a second). Prints figures and ratios; asserts
nothing.

    python3 bench/bench_web.py [--quick] [--entries 10000] [--rounds 15]

One real `flowmetal serve --no-worker` on 127.0.0.1 (tests/serverutil.py, as
tests/test_web_perf.py) over a database holding one completed run of `--entries`
journaled now() calls. Logged in with a read token, each round times, one after another
so all see the same machine (httpx, one kept-alive connection per side, the whole body read):

- page: GET /runs/ID, the run's page with the first 200 journal entries as a timeline;
- last page: GET /runs/ID?after=N-200, the page holding the newest 200 entries;
- API journal: GET /api/v1/runs/ID/journal, every entry as JSON (the same data, all of it);
- API 200: GET /api/v1/runs/ID/journal?after=N-200, the entries the last page shows.

The table shows the median and the fastest of the rounds for each, and the ratios of
the medians: page / API journal (below 1: the paginated page is cheaper than the API's
full journal), and page / API 200 (what rendering HTML costs over the JSON of the same
200 entries). --quick: 5 rounds.
"""

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # serverutil: a real `flowmetal serve` subprocess
sys.path.insert(0, str(HERE.parent / "src" / "python"))

from serverutil import Served, workspace  # noqa: E402

FLOWS = """
def many(n = 10000):
    for i in range(n):
        now()
    return n
"""


def timed(client, path, check):
    t = time.perf_counter()
    r = client.get(path)
    body = r.text
    elapsed = time.perf_counter() - t
    assert r.status_code == 200, (path, r.status_code, body[:300])
    check(body)
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds (under a minute)")
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    rounds = 5 if a.quick else a.rounds
    n = a.entries
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        root, db = workspace(Path(tmp), {"flows.star": FLOWS})
        s = Served(root, db, "flows.star", "--no-worker")
        token = s.token("bench", "read")
        t = time.perf_counter()
        out = s.cli("run", "flows.star:many", "-a", f"n:={n}", timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"flowmetal run failed: {out.stderr}")
        made = time.perf_counter() - t
        run_id = s.rows("SELECT id FROM runs")[0][0]
        got = s.rows("SELECT count(*) FROM journal WHERE run_id = ?", (run_id,))[0][0]
        if got != n:
            raise SystemExit(f"the run has {got} journal entries, expected {n}")
        s.start()
        try:
            with s.client() as web, s.client(token) as api:
                csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/login").text).group(1)
                if web.post("/login", data={"csrf": csrf, "token": token, "next": "/"}).status_code != 303:
                    raise SystemExit("could not log in")
                last = max(n - 200, 0)
                shown = min(n, 200)
                cases = {
                    "page": (web, f"/runs/{run_id}",
                             lambda b: b.count('class="entry ') == shown and f"Journal ({n} entries)" in b),
                    "last page": (web, f"/runs/{run_id}?after={last}",
                                  lambda b: b.count('class="entry ') == shown and f'data-seq="{n}"' in b),
                    "API journal": (api, f"/api/v1/runs/{run_id}/journal", lambda b: b.count('"seq":') == n),
                    "API 200": (api, f"/api/v1/runs/{run_id}/journal?after={last}",
                                lambda b: b.count('"seq":') == shown),
                }
                for client, path, check in cases.values():  # warm up: templates, caches, connections
                    timed(client, path, lambda b: None)
                times = {k: [] for k in cases}
                for _ in range(rounds):
                    for name, (client, path, check) in cases.items():
                        ok = []
                        times[name].append(timed(client, path, lambda b: ok.append(check(b))))
                        if not ok[0]:
                            raise SystemExit(f"{name}: {path} did not answer what it should")
        finally:
            s.kill()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"bench_web: a completed run of {n:,} journal entries (made in {made:.1f} s), "
          f"flowmetal serve on 127.0.0.1, {rounds} rounds")
    print(f"{'request':<14} {'median ms':>10} {'fastest ms':>11}")
    for k, v in times.items():
        print(f"{k:<14} {med[k] * 1000:>10.1f} {min(v) * 1000:>11.1f}")
    print(f"page / API journal:     {med['page'] / med['API journal']:.2f}x "
          f"(last page: {med['last page'] / med['API journal']:.2f}x)")
    print(f"page / API 200 entries: {med['page'] / med['API 200']:.2f}x "
          f"(last page: {med['last page'] / med['API 200']:.2f}x)")
    verdict = "under" if max(med["page"], med["last page"]) < 1.0 else "OVER"
    print(f"the run's pages load in {max(med['page'], med['last page']) * 1000:.0f} ms at the median: "
          f"{verdict} the 1 s of issue 14")


if __name__ == "__main__":
    main()
