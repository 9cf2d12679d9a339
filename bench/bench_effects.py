"""How fast are journaled effects, compared with what the disk allows?

Prints, all measured in this one process:

- raw SQLite commits per second: one small INSERT per transaction, with the
  store's pragmas (WAL, synchronous NORMAL), the floor every journaled effect
  stands on;
- journaled `sh("true")` effects per second: a workflow calling it N times,
  executed in-process by the runner (each effect is two journal writes, a
  started entry and its completion, around the command);
- journaled `http` GET effects per second against a local HTTP server;

each as a ratio to the raw commit rate, next to the same effect performed
without the journal (so the journal's share of the cost can be read off).

    python3 bench/bench_effects.py [--sh N] [--http N] [--commits N]
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowmetal.clock import SYSTEM  # noqa: E402
from flowmetal.engine.effects import EffectContext, http, sh  # noqa: E402
from flowmetal.engine.runner import Execution  # noqa: E402
from flowmetal.engine.runs import create_run  # noqa: E402
from flowmetal.engine.worker import make_owner  # noqa: E402
from flowmetal.store.sqlite import SqliteStore  # noqa: E402
from common import RawCommits  # noqa: E402

WORKFLOW = """
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
    run_id = create_run(store, SYSTEM, file="bench.star", function=function, args=args,
                        texts={"bench.star": WORKFLOW})
    owner = make_owner()
    run = store.claim(owner, 3600, run_id=run_id)
    start = time.perf_counter()
    state = Execution(store, run, owner, SYSTEM).execute()
    elapsed = time.perf_counter() - start
    if state != "completed":
        raise SystemExit(f"bench run {run_id} ended {state}: {store.get_run(run_id)['error']}")
    entries = len(store.journal(run_id))
    if entries != n:
        raise SystemExit(f"bench run {run_id} journaled {entries} effects, expected {n}")
    return n / elapsed


def bare_per_second(module, args, n):
    """The same effect performed directly, without the gate and the journal."""
    ctx = EffectContext(run_id="bench", seq=1)
    start = time.perf_counter()
    for _ in range(n):
        if not module.perform(dict(args), ctx)["ok"]:
            raise SystemExit(f"bare {module.__name__} effect failed")
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sh", type=int, default=300, help="sh effects to time (default 300)")
    parser.add_argument("--http", type=int, default=300, help="http effects to time (default 300)")
    parser.add_argument("--commits", type=int, default=3000, help="raw commits to time (default 3000)")
    opts = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hello"

    with tempfile.TemporaryDirectory(prefix="flowmetal-bench-") as tmp:
        commits = 1 / RawCommits(row=(None, "x" * 200)).seconds_per_commit(opts.commits)
        store = SqliteStore(os.path.join(tmp, "flowmetal.db"))
        # Warm up: imports, parse cache, the first process spawn and connection.
        journaled_per_second(store, "sh_loop", {"n": 3}, 3)
        journaled_per_second(store, "http_loop", {"url": url, "n": 3}, 3)
        sh_rate = journaled_per_second(store, "sh_loop", {"n": opts.sh}, opts.sh)
        http_rate = journaled_per_second(store, "http_loop", {"url": url, "n": opts.http}, opts.http)
        sh_bare = bare_per_second(sh, {"cmd": "true"}, opts.sh)
        http_bare = bare_per_second(http, {"url": url}, opts.http)
        store.close()
    server.shutdown()

    print(f"raw SQLite commits (WAL, synchronous NORMAL): {commits:10.0f} /s")
    print(f"journaled sh(\"true\") effects:                {sh_rate:10.1f} /s   "
          f"= {sh_rate / commits:.4f} x raw commits   (unjournaled: {sh_bare:.1f} /s, "
          f"journal share {max(0.0, 1 - sh_rate / sh_bare):.0%})")
    print(f"journaled http GET effects (local server):   {http_rate:10.1f} /s   "
          f"= {http_rate / commits:.4f} x raw commits   (unjournaled: {http_bare:.1f} /s, "
          f"journal share {max(0.0, 1 - http_rate / http_bare):.0%})")


if __name__ == "__main__":
    main()
