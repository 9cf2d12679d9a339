"""Cheaper executions (issue 17 item 4): the prelude is evaluated once per process and its
host callables act for the run executing on the calling thread; nothing leaks between runs."""

import threading

import pytest

from flowmetal.clock import SYSTEM
from flowmetal.engine.runner import Execution
from flowmetal.engine.runs import create_run, load_target
from flowmetal.engine.worker import make_owner
from flowmetal.lang import loader
from flowmetal.lang.workspace import PinnedSources
from flowmetal.store.sqlite import SqliteStore


@pytest.fixture
def ws(tmp_path):
    (tmp_path / ".flowmetal").mkdir()
    store = SqliteStore(tmp_path / ".flowmetal" / "t.db")
    yield tmp_path, store
    store.close()


def start(ws, name, text=None, args=None):
    root, store = ws
    if text is not None:
        (root / name).write_text(text)
    file, texts = load_target(root, root / name, "main")
    return create_run(store, SYSTEM, file=file, function="main", args=args or {}, texts=texts, root_dir=str(root))


def execute(ws, run_id):
    store = ws[1]
    owner = make_owner()
    run = store.claim(owner, 60, run_id=run_id)
    assert run is not None
    return Execution(store, run, owner, SYSTEM).execute(), store.get_run(run_id)


def test_the_prelude_is_evaluated_once_per_process(ws):
    loader.frozen_prelude()
    before = loader.PRELUDE_EVALUATIONS[0]
    assert before == 1
    for i in range(3):
        state, row = execute(ws, start(ws, "w.star", "def main():\n    print('hi')\n    return now() > 0\n"))
        assert (state, row["result"]) == ("completed", "true")
    assert loader.PRELUDE_EVALUATIONS[0] == 1


def test_a_global_list_cannot_carry_state_from_one_run_to_the_next(ws):
    text = "SEEN = []\n\ndef main():\n    SEEN.append(1)\n    return len(SEEN)\n"
    first = start(ws, "g.star", text)
    second = start(ws, "g.star")
    for run_id in (first, second):  # one process, one file: each run fails alike, none sees the other's
        state, row = execute(ws, run_id)
        assert state == "failed"
        assert "Immutable" in row["error"] and "g.star:4" in row["error"]
    text = "SEEN = []\n\ndef main():\n    seen = list(SEEN)\n    seen.append(now())\n    return len(seen)\n"
    for _ in range(2):
        state, row = execute(ws, start(ws, "h.star", text))
        assert (state, row["result"]) == ("completed", "1")


def test_runs_executing_at_once_each_journal_their_own_effects(ws):
    text = 'def main(tag):\n    r = sh("sleep 0.3; echo " + tag)\n    log("got", r.stdout.strip())\n    return r.stdout.strip()\n'
    ids = [start(ws, "c.star", text, {"tag": f"t{i}"}) for i in range(3)]
    out = {}

    def go(run_id):
        out[run_id] = execute(ws, run_id)

    threads = [threading.Thread(target=go, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    store = ws[1]
    for i, run_id in enumerate(ids):
        state, row = out[run_id]
        assert (state, row["result"]) == ("completed", f'"t{i}"')
        journal = store.journal(run_id)
        assert [e["builtin"] for e in journal] == ["sh"]
        assert f"echo t{i}" in journal[0]["args"]
        assert [r["line"] for r in store.logs(run_id) if r["stream"] == "log"] == [f"got t{i}"]


def test_a_top_level_print_is_logged_by_every_run_of_the_file(ws):
    text = "print('loading')\n\ndef main():\n    return 1\n"
    store = ws[1]
    for _ in range(2):
        run_id = start(ws, "p.star", text)
        assert execute(ws, run_id)[0] == "completed"
        assert [r["line"] for r in store.logs(run_id)] == ["loading"]


def test_a_run_keeps_its_pinned_code_when_the_file_changes(ws):
    root = ws[0]
    old = start(ws, "v.star", "def main():\n    now()\n    return 'old'\n")
    assert execute(ws, start(ws, "v.star"))[1]["result"] == '"old"'  # the old code, loaded in this process
    (root / "v.star").write_text("def main():\n    now()\n    return 'new'\n")
    new = start(ws, "v.star")
    assert execute(ws, old)[1]["result"] == '"old"'
    assert execute(ws, new)[1]["result"] == '"new"'


def test_builtins_still_refuse_the_wrong_phase_and_a_file_may_redefine_one(ws):
    store = ws[1]
    with pytest.raises(Exception) as e:
        start(ws, "top.star", "X = now()\n\ndef main():\n    return X\n")
    assert "cannot be called while the file is loading" in e.value.diagnostics[0].render()
    run_id = start(ws, "own.star", "def log(x):\n    return 'mine ' + x\n\ndef main():\n    return log('a')\n")
    assert execute(ws, run_id)[1]["result"] == '"mine a"'
    assert store.logs(run_id) == []


def load(sources, name):
    program = loader.Program(PinnedSources(sources))
    try:
        module = program.load(name)
        return program, module
    finally:
        program.close()


def test_a_module_is_evaluated_once_per_content_and_again_when_it_or_a_load_changes():
    lib = "def value():\n    return 'lib v1'\n"
    main = 'load("lib.star", "value")\n\ndef main():\n    return value()\n'
    sources = {"main.star": main, "lib.star": lib}
    program, _ = load(sources, "main.star")
    count = loader.MODULE_EVALUATIONS[0]
    program, _ = load(dict(sources), "main.star")  # same texts: nothing evaluated, both texts still pinned
    assert loader.MODULE_EVALUATIONS[0] == count
    assert program.texts == sources
    sources["lib.star"] = "def value():\n    return 'lib v2'\n"  # the file it loads changed: both again
    program = loader.Program(PinnedSources(sources))
    assert program.call("main.star", "main", {}) == "lib v2"
    assert loader.MODULE_EVALUATIONS[0] == count + 2


def test_declarations_and_load_time_prints_are_seen_by_every_program():
    text = ('def job():\n    pass\n\nprint("loading")\n'
            'schedule(name = "j", cron = "0 * * * *", run = job)\n\ndef main():\n    return 1\n')
    for _ in range(2):
        lines = []
        program = loader.Program(PinnedSources({"s.star": text}), log=lines.append)
        program.load("s.star")
        assert [(d.kind, d.args["name"], d.line) for d in program.declarations] == [("schedule", "j", 5)]
        assert lines == ["loading"]
        program.close()
