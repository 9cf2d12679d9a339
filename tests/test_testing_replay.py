"""Golden journals (export, replay --file, flowmetal test) and the deploy gate
(replay --current --all, check --in-flight)."""

import json

FLOW = """\
def flow(name):
    sh(["echo", name])
    got = wait_signal(name)
    sh(["echo", "after", name])
    return got
"""


def three_waiting(fm):
    fm.write("flow.star", FLOW)
    ids = []
    for name in ("one", "two", "three"):
        r = fm("start", "flow.star:flow", "-a", f"name={name}")
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    r = fm("worker", "--until-idle", timeout=60)
    assert r.returncode == 0, r.stderr
    for run_id in ids:
        assert fm.run_row(run_id)["state"] == "waiting"
    return ids


def test_the_deploy_gate_names_exactly_the_run_that_would_diverge(fm):
    one, two, three = three_waiting(fm)
    r = fm("replay", "--current", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 run(s) in flight replay on the current files; no divergence" in r.stdout

    # An edit after every run's position (the runs wait at wait_signal): still safe.
    fm.write("flow.star", FLOW.replace('sh(["echo", "after", name])', 'sh(["echo", "AFTER", name])'))
    r = fm("replay", "--current", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fm("check", "--in-flight", ".")
    assert r.returncode == 0, r.stdout + r.stderr

    # An edit that changes the effect run "two" is waiting at.
    fm.write("flow.star", FLOW.replace("got = wait_signal(name)",
                                       'got = wait_signal("renamed" if name == "two" else name)'))
    r = fm("replay", "--current", "--all")
    assert r.returncode == 1, r.stdout + r.stderr
    diverging = [ln for ln in r.stdout.splitlines() if ln.startswith("DIVERGES ")]
    assert diverging == [f"DIVERGES {two} (waiting, flow.star:flow)"], r.stdout
    assert one not in r.stdout and three not in r.stdout
    assert "journal position 2" in r.stdout
    assert 'recorded wait_signal({"name":"two"})' in r.stdout
    assert 'called wait_signal({"name":"renamed"})' in r.stdout
    assert "1 of 3 run(s) in flight would diverge" in r.stdout
    r = fm("check", "--in-flight", ".")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"DIVERGES {two} " in r.stdout
    # nothing was written: the runs still wait where they were
    for run_id in (one, two, three):
        assert fm.run_row(run_id)["state"] == "waiting"
        assert len(fm.journal(run_id)) == 2


def test_export_then_replay_file_and_flowmetal_test_replays_golden_journals(fm):
    one, two, _ = three_waiting(fm)
    assert fm("signal", one, "one", '{"ok": 1}').returncode == 0
    assert fm("worker", "--until-idle", timeout=60).returncode == 0
    assert fm.run_row(one)["state"] == "completed"
    r = fm("export", one, "-o", "one.journal.json")
    assert r.returncode == 0, r.stderr
    doc = json.loads((fm.root / "one.journal.json").read_text())
    assert doc["format"] == "flowmetal-journal/1"
    assert [e["builtin"] for e in doc["runs"][0]["journal"]] == ["sh", "wait_signal", "sh"]
    assert doc["runs"][0]["sources"]["flow.star"] == FLOW

    r = fm("replay", "--file", "one.journal.json")
    assert r.returncode == 0 and "replayed 3 of 3" in r.stdout, r.stdout + r.stderr
    r = fm("test", ".")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr

    fm.write("flow.star", FLOW.replace('["echo", "after", name]', '["echo", "later", name]'))
    r = fm("replay", "--file", "one.journal.json")  # pinned code: still replays
    assert r.returncode == 0, r.stdout
    r = fm("replay", "--file", "one.journal.json", "--current")
    assert r.returncode == 1, r.stdout
    assert "DIVERGES" in r.stdout and "journal position 3" in r.stdout
    r = fm("test", ".")
    assert r.returncode == 1, r.stdout
    assert "one.journal.json: run " in r.stdout and "DIVERGES" in r.stdout
    assert '"cmd":["echo","later","one"]' in r.stdout


def test_replay_usage_errors(fm):
    r = fm("replay")
    assert r.returncode == 2 and "replay takes one of" in r.stderr
    r = fm("replay", "--all")
    assert r.returncode == 2 and "pass --current too" in r.stderr
    fm.write("x.journal.json", "{}")
    r = fm("replay", "--file", "x.journal.json")
    assert r.returncode == 2 and "not a Flowmetal journal file" in r.stderr


FAN = """\
def child(n):
    return n * 10

def main(out):
    hs = [spawn(child, 1), spawn(child, 2)]
    sh("echo spawned >> " + out)
    rs = wait(hs)
    sh("echo waited >> " + out)
    return [r.value for r in rs]
"""


def test_export_of_a_forked_run_records_the_fork_and_replays_from_the_file(fm):
    from conftest import run_id_of

    fm.write("fan.star", FAN)
    side = fm.root / "side.txt"
    r = fm("run", "fan.star", "-a", f"out={side}")
    assert r.returncode == 0, r.stderr
    old = run_id_of(r.stderr)
    f = fm("fork", old, "--at", "4")  # spawn, spawn, sh, wait copied (the children are the old run's)
    assert f.returncode == 0, f.stderr
    new = run_id_of(f.stderr)
    assert fm("export", new, "-o", "forked.journal.json").returncode == 0
    doc = json.loads((fm.root / "forked.journal.json").read_text())
    run = doc["runs"][0]["run"]
    assert (run["id"], run["forked_from"], run["forked_at"]) == (new, old, 4)
    assert [e["builtin"] for e in doc["runs"][0]["journal"]] == ["spawn", "spawn", "sh", "wait", "sh"]
    assert len(doc["runs"]) == 1  # the shared children belong to the old run
    # a run that was not forked has no fork fields (files of other runs are as before)
    assert fm("export", old, "-o", "old.json").returncode == 0
    old_doc = json.loads((fm.root / "old.json").read_text())
    assert "forked_from" not in old_doc["runs"][0]["run"] and len(old_doc["runs"]) == 3

    r = fm("replay", "--file", "forked.journal.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"run {new}: replayed 5 of 5 journal entries" in r.stdout
    r = fm("replay", "--file", "forked.journal.json", "--current")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fm("test", ".")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr

    # imported into another database, the fork is still a fork
    from flowmetal.engine.journal_file import import_tree
    from flowmetal.store.sqlite import SqliteStore

    other = SqliteStore(fm.root / "other.db")
    try:
        assert import_tree(other, doc) == new
        row = other.get_run(new)
        assert (row["forked_from"], row["forked_at"], row["state"]) == (old, 4, "completed")
    finally:
        other.close()

    fm.write("fan.star", FAN.replace('"echo waited >> "', '"echo WAITED >> "'))
    r = fm("replay", "--file", "forked.journal.json", "--current")
    assert r.returncode == 1 and "journal position 5" in r.stdout, r.stdout
