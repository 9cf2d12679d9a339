"""`flowmetal check`: every problem as file:line:col with the source line; exit 2 on any error."""

import os

import pytest

GOOD_LIB = '''
def double(x: int) -> int:
    return x * 2
'''

GOOD_MAIN = '''
load("lib/math.star", "double")
load("@flowmetal//text.star", "greeting")

def job(n = 1):
    print(greeting("check"))
    return double(n)

def notify(run_id, schedule, fire_time, state, error):
    log(run_id, schedule, fire_time, state, error)

schedule(name = "nightly", cron = "0 3 * * *", run = job, timezone = "Europe/Berlin",
         on_failure = notify, overlap = "buffer_one", catchup = "all", catchup_window = "1d")
'''


def check(fm, *paths):
    r = fm("check", *paths)
    assert "Traceback" not in r.stdout + r.stderr
    return r


@pytest.fixture
def good(fm):
    fm.write("lib/math.star", GOOD_LIB)
    fm.write("main.star", GOOD_MAIN)
    return fm


def test_good_tree_passes(good):
    r = check(good, ".")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 file(s) checked, 1 schedule(s), 0 error(s)" in r.stderr


def test_examples_pass(fm):
    from conftest import EXAMPLES

    r = check(fm, EXAMPLES)
    assert r.returncode == 0, r.stdout + r.stderr


CASES = [
    ("syntax.star", "def main(:\n    return 1\n", "syntax.star:1:10", "Parse error"),
    ("names.star", "def main():\n    return undefined_thing\n", "names.star:2:12", "undefined_thing"),
    ("missing.star", 'load("nope.star", "x")\n', "nope.star", "does not exist"),
    ("dotdot.star", 'load("../outside.star", "x")\n', "dotdot.star:1:1", "leaves the workspace root"),
    ("absolute.star", 'load("/etc/x.star", "x")\n', "absolute.star:1:1", "is not allowed"),
    ("effect.star", 'x = 1\nout = sh("date")\n', "effect.star:2:7", "sh() is an effect"),
    ("cron.star", 'def j():\n    pass\nschedule(name = "c", cron = "61 * * * *", run = j)\n',
     "cron.star:3:1", "invalid cron expression \"61 * * * *\""),
    ("tz.star", 'def j():\n    pass\nschedule(name = "t", cron = "@daily", run = j, timezone = "Mars/Olympus")\n',
     "tz.star:3:1", "unknown timezone \"Mars/Olympus\""),
    ("overlap.star", 'def j():\n    pass\nschedule(name = "o", cron = "@daily", run = j, overlap = "sometimes")\n',
     "overlap.star:3:1", "overlap must be one of"),
    ("notfn.star", 'schedule(name = "n", cron = "@daily", run = "job")\n',
     "notfn.star:1:1", "run must be a top-level function"),
    ("types.star", 'def f(x: int) -> int:\n    return x\ndef main():\n    return f("a")\n',
     "types.star:4:14", "Expected type `int` but got `str`"),
]


@pytest.mark.parametrize("name,text,where,message", CASES, ids=[c[0] for c in CASES])
def test_each_error_is_reported_with_location(fm, name, text, where, message):
    fm.write(name, text)
    r = check(fm, name)
    assert r.returncode == 2, r.stdout + r.stderr
    assert where in r.stdout and message in r.stdout, r.stdout
    # the source line is shown under the message
    line = r.stdout.splitlines()[1]
    assert line.strip() and line.strip() in text


def test_load_cycle_names_the_cycle(fm):
    fm.write("a.star", 'load("b.star", "y")\nx = 1\n')
    fm.write("b.star", 'load("a.star", "x")\ny = 2\n')
    r = check(fm, "a.star")
    assert r.returncode == 2
    assert "load cycle: a.star -> b.star -> a.star" in r.stdout


def test_symlink_outside_root_is_refused(fm, tmp_path):
    outside = tmp_path / "outside.star"
    outside.write_text("x = 1\n")
    os.symlink(outside, fm.root / "link.star")
    fm.write("user.star", 'load("link.star", "x")\n')
    r = check(fm, "user.star")
    assert r.returncode == 2
    # Reported at the load() that uses the link, at its label.
    assert "user.star:1:6: error: cannot load 'link.star': link.star is a link to" in r.stdout
    assert "outside the workspace root" in r.stdout
    assert "link.star:1:1: error" not in r.stdout


def test_symlink_outside_root_does_not_stop_check_of_the_rest(fm, tmp_path):
    outside = tmp_path / "outside.star"
    outside.write_text("x = 1\n")
    os.symlink(outside, fm.root / "link.star")
    fm.write("main.star", 'load("link.star", "x")\n')
    fm.write("other.star", "def f():\n    return nope\n")
    fm.write("fine.star", "def g():\n    return 1\n")
    r = check(fm, ".")
    assert r.returncode == 2
    assert "main.star:1:6: error: cannot load 'link.star'" in r.stdout
    assert "other.star:2:12: error: Variable `nope` not found" in r.stdout
    assert "link.star:1:1: warning: not checked: a link to" in r.stdout
    assert "3 file(s) checked" in r.stderr


def test_missing_load_is_reported_at_its_label(fm):
    fm.write("bad.star", 'x = 1\nload(\n    "//missing.star", "z")\n')
    r = check(fm, "bad.star")
    assert r.returncode == 2
    assert "bad.star:3:5: error: cannot load '//missing.star': file missing.star does not exist" in r.stdout
    assert "missing.star:1:1" not in r.stdout


def test_duplicate_schedule_names_across_files(fm):
    for f in ("one.star", "two.star"):
        fm.write(f, 'def j():\n    pass\nschedule(name = "same", cron = "@daily", run = j)\n')
    r = check(fm, ".")
    assert r.returncode == 2
    assert "two.star:3:1" in r.stdout and "duplicate schedule name 'same' (also declared at one.star:3)" in r.stdout


def test_several_errors_in_one_file_are_all_reported(fm):
    fm.write("many.star", '''def j():
    return nope_one + nope_two

schedule(name = "x", cron = "99 * * * *", run = j, timezone = "Nowhere/City")
schedule(name = "y", cron = "@daily", run = j, overlap = "never")
''')
    r = check(fm, "many.star")
    assert r.returncode == 2
    out = r.stdout
    for expected in ("many.star:2:12", "nope_one", "many.star:2:23", "nope_two", "invalid cron expression",
                     "unknown timezone", "overlap must be one of"):
        assert expected in out, (expected, out)
    assert "5 error(s)" in r.stderr


def test_errors_in_several_files_are_all_reported(fm):
    fm.write("a.star", "def main(:\n")
    fm.write("b.star", "x = sh('ls')\n")
    r = check(fm, ".")
    assert r.returncode == 2
    assert "a.star:1:" in r.stdout and "b.star:1:5" in r.stdout


def test_stdlib_is_loadable_and_unknown_stdlib_is_an_error(fm):
    fm.write("ok.star", 'load("@flowmetal//text.star", "greeting", "indent")\ndef main():\n    return indent(greeting("x"))\n')
    assert check(fm, "ok.star").returncode == 0
    r = fm("run", "ok.star")
    assert r.returncode == 0 and r.stdout.strip() == '"  Hello, x!"'
    fm.write("bad.star", 'load("@flowmetal//nope.star", "x")\n')
    r = check(fm, "bad.star")
    assert r.returncode == 2 and "no standard library file" in r.stdout


def test_lint_warnings_do_not_fail(fm):
    fm.write("lint.star", "def main():\n    unused = 1\n    return 2\n\ndef main2():\n    return 1\n    x = 2\n")
    r = check(fm, "lint.star")
    assert r.returncode == 0, r.stdout
    assert "warning" in r.stdout and "lint.star:7:5" in r.stdout


def test_missing_path_is_usage_error(fm):
    r = check(fm, "does/not/exist")
    assert r.returncode == 2 and "no such file or directory" in r.stderr


def test_help_and_version(fm):
    r = fm("--help")
    assert r.returncode == 0
    for cmd in ("run", "start", "runs", "show", "logs", "signal", "cancel", "resume", "worker", "check", "replay"):
        assert f"  {cmd} " in r.stdout, cmd
    r = fm("--version")
    assert r.returncode == 0 and "flowmetal, version" in r.stdout


def test_schedule_in_a_loop_is_reported_at_its_call(fm):
    fm.write("loop.star", 'def j():\n    pass\n\nfor n in ["a", "b"]:\n    schedule(name = n, cron = "61 * * * *", run = j)\n')
    r = check(fm, "loop.star")
    assert r.returncode == 2
    assert r.stdout.count("loop.star:5:5: error: schedule") == 2, r.stdout


def test_unknown_name_called_at_top_level_is_reported_once(fm):
    fm.write("once.star", "x = undefined_function(1)\n")
    r = check(fm, "once.star")
    assert r.returncode == 2
    assert r.stdout.count("once.star:1:5") == 1, r.stdout
