"""How fast are journaled effects, compared with what the disk allows?

Prints, all measured in this one process, for each `synchronous` setting asked
(`--sync normal|full|both`; FULL is what FLOWMETAL_SYNC=full selects):

- raw SQLite commits per second: one small INSERT per transaction, with the
  store's pragmas (WAL, synchronous NORMAL or FULL), the floor every durable step
  stands on;
- journaled `now()` effects per second: a run of N of them (pure effects are
  held and committed in groups, engine/gate_held.py, so this can exceed the raw
  commit rate), and DBOS Transact steps returning time.time() at the same
  setting when DBOS is installed (bench/requirements.txt; `--no-dbos` skips it);
- journaled `sh("true")` effects per second: a workflow calling it N times,
  executed in-process by the runner (each effect is two journal writes, a
  started entry and its completion, around the command);
- journaled `http` GET effects per second against a local HTTP server;

each as a ratio to the raw commit rate, next to the same effect performed
without the journal (so the journal's share of the cost can be read off).

    python3 bench/bench_effects.py [--sync both] [--now N] [--sh N] [--http N] [--commits N] [--no-dbos] [--quick]

bench_durability.py measures now() and sh("true") against DBOS in interleaved blocks
(medians and ranges); this script is the quick single pass.
"""

import argparse
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import RawCommits, SqliteStore, effect_modules, execute_claimed, new_run_in

WORKFLOW = """
def now_loop(n):
    for i in range(n):
        now()
    return n

def sh_loop(n):
    for i in range(n):
        sh("true")
    return n

def http_loop(url, n):
    for i in range(n):
        http(url)
    return n
"""


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def journaled_per_second(store, function, args, n):
    """Execute one run of `function` (which performs n effects) in-process; effects per second."""
    run_id = new_run_in(store, "bench.star", function, args, {"bench.star": WORKFLOW})
    state, elapsed = execute_claimed(store, run_id)
    if state != "completed":
        raise SystemExit(f"bench run {run_id} ended {state}: {store.get_run(run_id)['error']}")
    entries = len(store.journal(run_id))
    if entries != n:
        raise SystemExit(f"bench run {run_id} journaled {entries} effects, expected {n}")
    return n / elapsed


def bare_per_second(module, args, n):
    """The same effect performed directly, without the gate and the journal."""
    EffectContext, _ = effect_modules()
    ctx = EffectContext(run_id="bench", seq=1)
    start = time.perf_counter()
    for _ in range(n):
        if not module.perform(dict(args), ctx)["ok"]:
            raise SystemExit(f"bare {module.__name__} effect failed")
    return n / (time.perf_counter() - start)


def dbos_rates(sync, n, sh_n):
    """(DBOS time.time() steps/s, subprocess steps/s) at `sync`, or None without DBOS."""
    from dbos_baseline import DbosProcess, DbosUnavailable, marginal_rates

    try:
        with DbosProcess(sync) as dbos:
            now = marginal_rates([(dbos.seconds("now", n), dbos.seconds("empty", 0), n) for _ in range(3)])
            sh = marginal_rates([(dbos.seconds("sh", sh_n), dbos.seconds("empty", 0), sh_n) for _ in range(3)])
        return sorted(now)[1], sorted(sh)[1]
    except DbosUnavailable as e:
        print(f"  (DBOS: {e})")
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", choices=("normal", "full", "both"), default="both")
    parser.add_argument("--now", type=int, default=5000, help="now() effects to time (default 5000)")
    parser.add_argument("--sh", type=int, default=300, help="sh effects to time (default 300)")
    parser.add_argument("--http", type=int, default=300, help="http effects to time (default 300)")
    parser.add_argument("--commits", type=int, default=3000, help="raw commits to time (default 3000)")
    parser.add_argument("--no-dbos", action="store_true", help="leave DBOS out")
    parser.add_argument("--quick", action="store_true", help="small counts, to check the script")
    opts = parser.parse_args()
    if opts.quick:
        opts.now, opts.sh, opts.http, opts.commits = 1000, 30, 30, 300

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hello"
    _, modules = effect_modules()
    sh_bare = bare_per_second(modules["sh"], {"cmd": "true"}, opts.sh)
    http_bare = bare_per_second(modules["http"], {"url": url}, opts.http)

    for sync in (("normal", "full") if opts.sync == "both" else (opts.sync,)):
        with tempfile.TemporaryDirectory(prefix="flowmetal-bench-") as tmp:
            commits = 1 / RawCommits(row=(None, "x" * 200), sync=sync).seconds_per_commit(opts.commits)
            store = SqliteStore(os.path.join(tmp, "flowmetal.db"), synchronous_full=sync == "full")
            # Warm up: imports, parse cache, the first process spawn and connection.
            journaled_per_second(store, "now_loop", {"n": 3}, 3)
            journaled_per_second(store, "sh_loop", {"n": 3}, 3)
            journaled_per_second(store, "http_loop", {"url": url, "n": 3}, 3)
            now_rate = journaled_per_second(store, "now_loop", {"n": opts.now}, opts.now)
            sh_rate = journaled_per_second(store, "sh_loop", {"n": opts.sh}, opts.sh)
            http_rate = journaled_per_second(store, "http_loop", {"url": url, "n": opts.http}, opts.http)
            store.close()
        dbos = None if opts.no_dbos else dbos_rates(sync, min(opts.now, 400), min(opts.sh, 50))
        print(f"synchronous={sync.upper()} (WAL):")
        print(f"  raw SQLite commits:                          {commits:10.0f} /s")
        vs_dbos = f"   = {now_rate / dbos[0]:.1f} x DBOS time.time() steps ({dbos[0]:,.0f} /s)" if dbos else ""
        print(f"  journaled now() effects:                     {now_rate:10.0f} /s   "
              f"= {now_rate / commits:.2f} x raw commits{vs_dbos}")
        vs_dbos = f"   = {sh_rate / dbos[1]:.2f} x DBOS subprocess steps ({dbos[1]:,.0f} /s)" if dbos else ""
        print(f"  journaled sh(\"true\") effects:                {sh_rate:10.1f} /s   "
              f"= {sh_rate / commits:.4f} x raw commits   (unjournaled: {sh_bare:.1f} /s, "
              f"journal share {max(0.0, 1 - sh_rate / sh_bare):.0%}){vs_dbos}")
        print(f"  journaled http GET effects (local server):   {http_rate:10.1f} /s   "
              f"= {http_rate / commits:.4f} x raw commits   (unjournaled: {http_bare:.1f} /s, "
              f"journal share {max(0.0, 1 - http_rate / http_bare):.0%})")
    server.shutdown()


if __name__ == "__main__":
    main()
