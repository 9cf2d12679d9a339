"""What the smaller commands accept and print (issue 12 item 15, command line parts)."""

import re

import pytest

from conftest import run_id_of

PARENT = """
def child(n):
    log("child line %d" % n)
    return n

def main():
    log("parent line")
    return [r.value for r in wait([spawn(child, n = 1)])]
"""


@pytest.mark.parametrize("args", [
    ["worker", "--concurrency", "0"], ["worker", "--concurrency", "-1"], ["runs", "--limit", "-1"],
    ["run", "x.star", "--concurrency", "0"], ["resume", "--concurrency", "0"],
])
def test_out_of_range_counts_are_refused(fm, args):
    fm.write("x.star", "def main():\n    return 1\n")
    r = fm(*args, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "Invalid value" in r.stderr and "Traceback" not in r.stderr


def test_empty_signal_name_is_refused(fm):
    fm.write("w.star", "def main():\n    return wait_signal('go')\n")
    run_id = fm("start", "w.star").stdout.strip()
    for name in ("", "  "):
        r = fm("signal", run_id, name)
        assert r.returncode == 2 and "signal name is empty" in r.stderr
    st = fm.store()
    try:
        assert st.signals(run_id) == []
    finally:
        st.close()


def test_show_of_a_pending_run_says_not_yet(fm):
    fm.write("p.star", "def main():\n    return 1\n")
    run_id = fm("start", "p.star").stdout.strip()
    r = fm("show", run_id)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("created "))
    assert "started not yet" in line and "ended not yet" in line
    assert not re.search(r"(started|ended)\s{2,}", line)


def test_log_lines_show_date_and_time(fm):
    fm.write("l.star", "def main():\n    log('hello there')\n    return 1\n")
    run_id = run_id_of(fm("run", "l.star").stderr)
    out = fm("logs", run_id).stdout
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d hello there$", out.strip()), out


def test_runs_detail_shows_the_first_line_of_an_error(fm):
    fm.write("f.star", "def main():\n    fail('it broke')\n")
    r = fm("run", "f.star")
    assert r.returncode == 1
    out = fm("runs").stdout
    row = next(ln for ln in out.splitlines() if run_id_of(r.stderr) in ln)
    assert "\\n" not in row and "it broke" in row, row


def test_logs_tree_includes_the_childrens_lines(fm):
    fm.write("tree.star", PARENT)
    r = fm("run", "tree.star")
    assert r.returncode == 0, r.stderr
    parent = run_id_of(r.stderr)
    plain = fm("logs", parent).stdout
    assert "parent line" in plain and "child line" not in plain
    tree = fm("logs", parent, "--tree").stdout.splitlines()
    child = fm.store().list_runs(parent_id=parent)[0]["id"]
    assert any(ln.endswith(" parent line") and "[" not in ln for ln in tree), tree
    assert any(ln.endswith(f"[{child}] child line 1") for ln in tree), tree
    child_tree = fm("logs", child, "--tree").stdout
    assert "child line 1" in child_tree and "parent line" not in child_tree
