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


def test_a_one_effect_run_costs_13_statements_and_4_commits(tmp_path):
    (tmp_path / ".flowmetal").mkdir()
    store = SqliteStore(tmp_path / ".flowmetal" / "t.db")
    traced_run(tmp_path, store, "def main():\n    return now()\n")  # warm: the second run is the one counted
    state, run_id, statements = traced_run(tmp_path, store, "def main():\n    return now()\n")
    assert state == "completed"
    assert store.get_run(run_id)["state"] == "completed" and len(store.journal(run_id)) == 1
    # create (BEGIN, run, source, pin, COMMIT), claim, journal and sources read, the effect's
    # entry, end (BEGIN, end, descendants, COMMIT): loading the code reads nothing more
    assert len(statements) <= 13, "\n".join(statements)
    assert commits(statements) <= 4, "\n".join(statements)
    claims = [s for s in statements if s.startswith("UPDATE runs SET state = 'running'")]
    assert len(claims) == 1
