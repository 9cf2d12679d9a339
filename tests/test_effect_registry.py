"""The effect registry: a new optional argument leaves recorded runs replayable (issue 11
items 1 and 3), run_info() (issue 12 item 20) and wait(any = True) (issue 12 item 19)."""

import dataclasses
import json
import time
from pathlib import Path

import pytest

from flowmetal.clock import SYSTEM
from flowmetal.engine import runs as run_ops
from flowmetal.engine.effects import registry
from flowmetal.engine.journal_file import import_tree
from flowmetal.engine.runner import Execution
from flowmetal.lang import prelude
from flowmetal.store.sqlite import SqliteStore

DATA = Path(__file__).resolve().parent / "testdata"
OWNER = "test-host:1:registry"

WORKFLOW = """
def main():
    a = sh("echo one").stdout.strip()
    sleep("2s")
    b = sh("echo two").stdout.strip()
    return a + b
"""


def drive(store, run_id, until=("completed", "failed", "waiting"), limit=20):
    end = time.time() + limit
    while time.time() < end:
        run = store.claim(OWNER, 30, root_id=run_id)
        if run is not None:
            Execution(store, run, OWNER, SYSTEM).execute()
            continue
        row = store.get_run(run_id)
        if row["state"] in until:
            return row
        time.sleep(0.05)
    raise AssertionError(store.get_run(run_id)["state"])


@pytest.fixture
def store(tmp_path):
    st = SqliteStore(tmp_path / "fm.db")
    yield st
    st.close()


@pytest.fixture
def sh_with_user(monkeypatch):
    """Release N+1 of the test: sh() gains an optional `user` argument, through the registry."""
    old = registry.lookup("sh")
    monkeypatch.setitem(registry.REGISTRY, "sh", dataclasses.replace(old, params={**old.params, "user": None}))
    text = prelude.PRELUDE_TEXT.replace(
        "def sh(cmd, env = {}, cwd = None, timeout = None, stdin = None, check = True, retry = None):",
        "def sh(cmd, env = {}, cwd = None, timeout = None, stdin = None, check = True, retry = None, user = None):",
    ).replace('        "retry": retry,\n    }))\n\ndef http', '        "retry": retry,\n        "user": user,\n    }))\n\ndef http')
    assert '"user": user' in text
    monkeypatch.setattr(prelude, "PRELUDE_TEXT", text)

    # The prelude and the modules built on it are kept once per process: the test runs on
    # the patched one (as a process of release N+1 would), then this process gets back the
    # one it had, as if release N+1 had been another process.
    saved, evaluations = list(prelude._prelude), prelude.PRELUDE_EVALUATIONS[0]

    def forget():
        prelude.prelude_ast.cache_clear()
        prelude._prelude.clear()
        prelude._MODULES.clear()

    forget()
    yield
    forget()
    prelude._prelude.extend(saved)
    prelude.PRELUDE_EVALUATIONS[0] = evaluations


def start(store, source, function="main"):
    return run_ops.create_run(store, SYSTEM, file="w.star", function=function, args={}, texts={"w.star": source})


def test_new_runs_record_release_prelude_and_digest_rule(store):
    run_id = start(store, WORKFLOW)
    row = store.get_run(run_id)
    assert row["digest_version"] == 2 and row["flowmetal_version"] and len(row["prelude_digest"]) == 16
    drive(store, run_id)
    [first, _] = store.journal(run_id)
    assert json.loads(first["args"]) == {"cmd": "echo one"}  # only what the call passed


def test_a_new_optional_argument_leaves_a_recorded_run_replayable(store, request):
    run_id = start(store, WORKFLOW)
    assert drive(store, run_id)["state"] == "waiting"
    before = [e["digest"] for e in store.journal(run_id)]
    request.getfixturevalue("sh_with_user")  # the upgrade, while the run sleeps
    store.update_run(run_id, wake_at=SYSTEM.now())
    row = drive(store, run_id, until=("completed", "failed"))
    assert row["state"] == "completed", row["error"]
    assert json.loads(row["result"]) == "onetwo"
    assert [e["digest"] for e in store.journal(run_id)][:2] == before


def test_a_run_of_release_0_1_0_survives_the_new_argument(store, sh_with_user):
    doc = json.loads((DATA / "v0.1.0-timer.journal.json").read_text())
    run_id = import_tree(store, doc)
    row = drive(store, run_id, until=("completed", "failed"))
    assert row["state"] == "completed", row["error"]


def test_passing_the_new_argument_is_a_different_call(store, sh_with_user):
    run_id = start(store, 'def main():\n    return sh("echo x", user = "nobody").stdout\n')
    drive(store, run_id)
    [entry] = store.journal(run_id)
    assert json.loads(entry["args"]) == {"cmd": "echo x", "user": "nobody"}


def test_run_info_is_journaled(store):
    run_id = start(store, 'def main():\n    i = run_info()\n    sleep("1500ms")\n'
                          '    return [i.id, i.target, i.attempt, i.parent_id, i.root_id, i.schedule, i.fire_time,'
                          ' run_info().attempt]\n')
    assert drive(store, run_id)["state"] == "waiting"
    row = drive(store, run_id, until=("completed", "failed"))
    # the first call's value is replayed as recorded; the second sees the execution it ran in
    assert json.loads(row["result"]) == [run_id, "w.star:main", 1, None, run_id, None, None, row["executions"]]
    assert row["executions"] >= 2
    assert [e["builtin"] for e in store.journal(run_id)] == ["run_info", "sleep", "run_info"]


ANY = """
def child(nap):
    sleep(nap)
    return nap

def main():
    slow = spawn(child, "30s")
    fast = spawn(child, "1500ms")
    first = wait([slow, fast], any = True)
    return [[r.state, r.value] for r in first]
"""


def test_wait_any_returns_when_one_child_has_ended(store):
    run_id = start(store, ANY)
    t0 = time.time()
    end = time.time() + 20
    while store.get_run(run_id)["state"] not in ("completed", "failed") and time.time() < end:
        now = SYSTEM.now()
        run = store.claim(OWNER, 30)
        if run is not None:
            Execution(store, run, OWNER, SYSTEM).execute()
        else:
            time.sleep(0.05)
    row = store.get_run(run_id)
    assert row["state"] == "completed", row["error"]
    assert json.loads(row["result"]) == [["waiting", None], ["completed", "1500ms"]]
    assert time.time() - t0 < 10
    waits = [e for e in store.journal(run_id) if e["builtin"] == "wait"]
    assert len(waits) == 1  # one entry, however often the run woke
    assert json.loads(waits[0]["args"])["any"] is True
