"""What one run costs the database (issue 17 item 4), counted with sqlite3's trace callback:
a guard against a statement or a commit creeping into the path of every run."""

from flowmetal.clock import SYSTEM
from flowmetal.engine.runner import Execution
from flowmetal.engine.runs import create_run, load_target
from flowmetal.engine.worker import make_owner
from flowmetal.store.sqlite import SqliteStore


def traced_run(tmp_path, store, text):
    (tmp_path / "one.star").write_text(text)
    owner = make_owner()
    statements = []
    store.conn.set_trace_callback(statements.append)
    try:
        name, texts = load_target(tmp_path, tmp_path / "one.star", "main")
        run_id = create_run(store, SYSTEM, file=name, function="main", args={}, texts=texts, root_dir=str(tmp_path))
        run = store.claim(owner, 60, run_id=run_id)
        state = Execution(store, run, owner, SYSTEM).execute()
    finally:
        store.conn.set_trace_callback(None)
    return state, run_id, [" ".join(s.split()) for s in statements]


def commits(statements):
    """COMMITs, plus writes made outside a transaction (each commits alone)."""
    n, open_ = 0, False
    for s in statements:
        word = s.split(" ", 1)[0].upper()
        if word == "BEGIN":
            open_ = True
        elif word in ("COMMIT", "ROLLBACK"):
            n, open_ = n + (word == "COMMIT"), False
        elif not open_ and word not in ("SELECT", "PRAGMA", "WITH"):
            n += 1
    return n


def test_a_one_effect_run_costs_13_statements_and_3_commits(tmp_path):
    (tmp_path / ".flowmetal").mkdir()
    store = SqliteStore(tmp_path / ".flowmetal" / "t.db")
    traced_run(tmp_path, store, "def main():\n    return now()\n")  # warm: the second run is the one counted
    state, run_id, statements = traced_run(tmp_path, store, "def main():\n    return now()\n")
    assert state == "completed"
    assert store.get_run(run_id)["state"] == "completed" and len(store.journal(run_id)) == 1
    # create (BEGIN, run, source, pin, COMMIT), claim, journal and sources read, end (BEGIN, the
    # held now() entry, end, descendants, COMMIT): the pure entry commits with the run's end
    assert len(statements) <= 13, "\n".join(statements)
    assert commits(statements) <= 3, "\n".join(statements)
    claims = [s for s in statements if s.startswith("UPDATE runs SET state = 'running'")]
    assert len(claims) == 1


def test_pure_effects_and_logs_commit_with_the_next_outside_effect(tmp_path):
    (tmp_path / ".flowmetal").mkdir()
    store = SqliteStore(tmp_path / ".flowmetal" / "t.db")
    text = ("def main():\n    for i in range(100):\n        print(str(now()))\n        uuid()\n"
            "    return sh('true').ok\n")
    state, run_id, statements = traced_run(tmp_path, store, text)
    assert state == "completed"
    journal = store.journal(run_id)
    assert [e["builtin"] for e in journal] == ["now", "uuid"] * 100 + ["sh"]
    assert len(store.logs(run_id)) == 100
    # create, claim, sh's started row with the 200 held entries and 100 log lines (two groups:
    # HOLD_ENTRIES items each at most, so one bound flush), its completion, the end
    assert commits(statements) <= 6, "\n".join(s for s in statements if not s.startswith("INSERT"))
    started = [i for i, s in enumerate(statements) if s.startswith("INSERT INTO journal")]
    assert len(started) == 201
