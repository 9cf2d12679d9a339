"""Record the golden journals of tests/testdata/ with the Flowmetal on PYTHONPATH.

    PYTHONPATH=src/python python3 tests/testdata/record_golden.py [--out DIR] [--prefix NAME]

Each workflow of tests/testdata/workflows/ is run in a fresh database until it
completes or waits, and its run tree is written as `<name>.journal.json`
(format: flowmetal/engine/journal_file.py). The files checked in were recorded
by the release named in each file's "flowmetal" field; never re-record them
(that would defeat their purpose). A new release adds its own files with
`--prefix`, so that the suite replays journals of every release.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from flowmetal.clock import SYSTEM
from flowmetal.engine import runs as run_ops
from flowmetal.engine.journal_file import export_tree
from flowmetal.engine.runner import Execution
from flowmetal.store.sqlite import SqliteStore

HERE = Path(__file__).resolve().parent
WORKFLOWS = HERE / "workflows"

# name: (file, args, the state the root is recorded in, description)
CASES = {
    "completed": ("completed.star", {"n": 3}, "completed", "a completed run: pure effects, sh, a short sleep, a loop"),
    "signal": ("signal.star", {}, "waiting", "waiting on the signal 'go' (deliver it to continue)"),
    "timer": ("timer.star", {"label": "golden"}, "waiting", "waiting on a 3s sleep (long expired on replay)"),
    "children": ("children.star", {}, "waiting", "a parent waiting on two children, one sleeping, one done"),
    "retry": ("retry.star", {}, "waiting", "in the 3s delay between two attempts of a failing sh"),
}


def drive(store, root_id, until_state, limit=30.0):
    """Execute the tree's due runs until the root is in `until_state` and nothing is due."""
    owner = "golden-recorder:1"
    end = time.time() + limit
    while time.time() < end:
        now = SYSTEM.now()
        run = store.claim(owner, 30, root_id=root_id)
        if run is not None:
            Execution(store, run, owner, SYSTEM).execute()
            continue
        if store.get_run(root_id)["state"] == until_state:
            return
        time.sleep(0.05)
    raise SystemExit(f"run {root_id} did not reach {until_state}: {store.get_run(root_id)['state']}")


def record(name, out_dir, prefix):
    file, args, state, description = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "golden.db")
        texts = {file: (WORKFLOWS / file).read_text()}
        root_id = run_ops.create_run(store, SYSTEM, file=file, function="main", args=args, texts=texts)
        drive(store, root_id, state)
        doc = export_tree(store, root_id, description=description)
        store.close()
    path = out_dir / f"{prefix}{name}.journal.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{path}: {len(doc['runs'])} runs, root {state}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--prefix", default="")
    parser.add_argument("names", nargs="*", default=list(CASES))
    opts = parser.parse_args()
    os.environ.pop("GOLDEN_UNSET", None)
    for name in opts.names:
        record(name, opts.out, opts.prefix)


if __name__ == "__main__":
    sys.exit(main())
