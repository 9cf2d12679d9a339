"""Journals recorded by earlier releases replay and continue on this one (SPEC section 3: upgrades).

Each tests/testdata/*.journal.json holds a run tree as a release recorded it
(tests/testdata/record_golden.py). Loaded into a fresh database, it must
replay without divergence and continue to the end under the current code;
a deliberately changed workflow must be reported as divergent.
"""

import json
from pathlib import Path

import pytest

from flowmetal.engine.journal_file import import_tree

DATA = Path(__file__).resolve().parent / "testdata"
GOLDEN = sorted(DATA.glob("*.journal.json"))


def load(fm, path, sources=None):
    doc = json.loads(Path(path).read_text())
    st = fm.store()
    try:
        return import_tree(st, doc, sources=sources), doc
    finally:
        st.close()


def golden(kind):
    return [p for p in GOLDEN if p.name.endswith(f"-{kind}.journal.json")]


def test_there_are_golden_journals_of_every_kind():
    for kind in ("completed", "signal", "timer", "children", "retry"):
        assert golden(kind), f"no golden journal of kind {kind}"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_journal_replays_without_divergence(fm, path):
    run_id, doc = load(fm, path)
    r = fm("replay", run_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no divergence" in r.stdout
    recorded = len(doc["runs"][0]["journal"])
    assert f"of {recorded} journal entries" in r.stdout


@pytest.mark.parametrize("path", golden("completed"), ids=lambda p: p.name)
def test_completed_golden_run_keeps_its_result(fm, path):
    run_id, doc = load(fm, path)
    row = fm.run_row(run_id)
    assert row["state"] == "completed"
    assert json.loads(row["result"]) == {"home": "none", "out": "hello", "r_ok": True, "t_ok": True,
                                         "total": 6, "u_len": 36}


def finish(fm, run_id):
    r = fm("resume", run_id, timeout=60)
    assert r.returncode == 0, r.stderr
    row = fm.run_row(run_id)
    assert row["state"] == "completed", row["error"]
    return json.loads(row["result"])


@pytest.mark.parametrize("path", golden("signal"), ids=lambda p: p.name)
def test_golden_run_waiting_on_a_signal_continues(fm, path):
    run_id, doc = load(fm, path)
    assert fm.run_row(run_id)["state"] == "waiting"
    assert fm("signal", run_id, "go", '{"by": "golden"}').returncode == 0
    assert finish(fm, run_id) == {"before": "before", "got": {"by": "golden"}, "after": "after"}
    entries = fm.journal(run_id)
    assert [e["builtin"] for e in entries] == ["sh", "wait_signal", "sh"]
    assert [e["digest"] for e in entries[:2]] == [e["digest"] for e in doc["runs"][0]["journal"]]


@pytest.mark.parametrize("path", golden("timer"), ids=lambda p: p.name)
def test_golden_run_waiting_on_a_timer_continues(fm, path):
    run_id, _ = load(fm, path)
    assert finish(fm, run_id) == {"label": "golden", "out": "woke", "slept": True}


@pytest.mark.parametrize("path", golden("children"), ids=lambda p: p.name)
def test_golden_run_waiting_on_children_continues(fm, path):
    run_id, doc = load(fm, path)
    assert finish(fm, run_id) == [10, 20]
    for item in doc["runs"][1:]:
        assert fm.run_row(item["run"]["id"])["state"] == "completed"


@pytest.mark.parametrize("path", golden("retry"), ids=lambda p: p.name)
def test_golden_run_in_a_retry_delay_continues(fm, path):
    run_id, _ = load(fm, path)
    assert finish(fm, run_id) == {"exit": 3, "out": "attempt"}
    entries = fm.journal(run_id)
    assert [e["builtin"] for e in entries] == ["sh", "retry_delay", "sh"]
    assert json.loads(entries[2]["args"])["attempt"] == 2


@pytest.mark.parametrize("path", golden("signal"), ids=lambda p: p.name)
def test_changed_workflow_is_reported_divergent(fm, path):
    changed = (DATA / "workflows" / "signal_changed.star").read_text()
    run_id, _ = load(fm, path, sources={"signal.star": changed})
    r = fm("replay", run_id)
    assert r.returncode != 0
    assert "DIVERGES" in r.stdout + r.stderr
    assert fm("signal", run_id, "go", "1").returncode == 0
    r = fm("resume", run_id, timeout=60)
    row = fm.run_row(run_id)
    assert row["state"] == "failed"
    first = row["error"].splitlines()[0]
    assert "journal position 1" in first
    assert 'recorded sh({"check":true,"cmd":"echo before"' in first
    assert 'the program called sh({' in first and '"cmd":"echo BEFORE"' in first
    assert len(fm.journal(run_id)) == 2  # nothing performed past the divergence
