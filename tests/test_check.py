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


# --- issue 12: deep nesting, panics, exclusions, non-.star files ----------------------------

import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEEP = {  # the shapes that crashed starlark's native stack (exit 139, no output)
    "plus": "X = " + "+".join(["1"] * 4000) + "\n",
    "unary_minus": "X = " + "-" * 5000 + "1\n",
    "brackets": "X = " + "[" * 5000 + "]" * 5000 + "\n",
    "lambda": "X = " + "lambda: " * 1500 + "1\n",
    "attribute": "X = struct(a = 1)" + ".a" * 5000 + "\n",
    "not": "X = " + "not " * 3420 + "True\n",
    "if_blocks": "def f():\n" + "".join("    " * (i + 1) + "if True:\n" for i in range(2000)) + "    " * 2001 + "pass\n",
    "elif_chain": "def f(a):\n    if a == 0:\n        return 0\n" + "".join(
        f"    elif a == {i}:\n        return {i}\n" for i in range(1, 6000)) + "    return -1\n",
}
NESTED = re.compile(r"^p\.star:(\d+):(\d+): error: expression nested deeper than 200 levels", re.M)


def no_crash(r):
    out = r.stdout + r.stderr
    assert r.returncode not in (-11, 139, -6, 134), f"crashed: {r.returncode}"
    assert "Traceback" not in out and "panicked at" not in out and "PanicException" not in out, out[-2000:]


@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deep_nesting_is_a_diagnostic_in_check(fm, shape):
    fm.write("p.star", DEEP[shape])
    r = check(fm, "p.star")
    no_crash(r)
    assert r.returncode == 2
    m = NESTED.search(r.stdout)
    assert m, r.stdout[:500]
    assert int(m[1]) >= 1 and int(m[2]) >= 1


def test_deep_nesting_limit_points_at_the_token_past_it(fm):
    fm.write("p.star", "x = 1\nY = " + "-" * 300 + "x\n")
    r = check(fm, "p.star")
    assert "p.star:2:205: error: expression nested deeper than 200 levels" in r.stdout  # the 201st `-`
    fm.write("p.star", "x = 1\nY = " + "-" * 199 + "x\n")  # under the limit: fine
    assert check(fm, "p.star").returncode == 0


@pytest.mark.parametrize("command", ["run", "start"])
def test_deep_nesting_is_a_diagnostic_in_run_and_start(fm, command):
    fm.write("p.star", "def main():\n    return " + "+".join(["1"] * 4000) + "\n")
    r = fm(command, "p.star")
    no_crash(r)
    assert r.returncode == 2
    assert NESTED.search(r.stdout + r.stderr)


def test_deep_nesting_is_a_diagnostic_in_replay(fm):
    fm.write("p.star", "def main():\n    return 1\n")
    run_id = fm("start", "p.star").stdout.strip()
    fm.write("p.star", "def main():\n    return " + "lambda: " * 1500 + "1\n")
    r = fm("replay", run_id, "--current")
    no_crash(r)
    assert NESTED.search(r.stdout + r.stderr), r.stdout + r.stderr


def test_running_scheduler_survives_a_deep_file(fm):
    fm.write("good.star", 'def job():\n    return 1\nschedule(name = "j", cron = "0 3 * * *", run = job)\n')
    proc = fm.spawn("schedule", ".")
    deadline = time.time() + 20
    while "scheduler started" not in proc.err() and time.time() < deadline:
        time.sleep(0.05)
    fm.write("deep.star", DEEP["plus"])
    time.sleep(3)  # it used to die about a second after such a file appeared
    assert proc.poll() is None, (proc.returncode, proc.err()[-2000:])
    assert "Traceback" not in proc.err() and "panicked at" not in proc.err()


def test_typecheck_panic_is_the_unknown_name(fm):
    # starlark's typechecker panics (typing/bindings.rs) on an unknown name: report the name
    fm.write("p.star", "def main():\n    x.append(1)\n")
    r = check(fm, "p.star")
    no_crash(r)
    assert r.returncode == 2
    assert "p.star:2:5: error: Variable `x` not found" in r.stdout
    assert "Starlark failed internally" not in r.stdout


def _limited(fm, *args):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024 ** 3, 2 * 1024 ** 3))

    return subprocess.run([sys.executable, "-m", "flowmetal", *args], cwd=fm.root, env=fm.env, capture_output=True,
                          text=True, timeout=60, preexec_fn=limit)


def test_out_of_memory_panic_is_a_diagnostic(fm):
    # Under a 2 GiB address-space limit starlark's heap panics with "out of memory" (bumpalo::oom).
    fm.write("o.star", 'X = "x" * 1500000000\n')
    r = _limited(fm, "check", "o.star")
    no_crash(r)
    assert r.returncode == 2
    assert "o.star:1:1: error: Starlark failed internally: out of memory (while loading this file)" in r.stdout


def test_out_of_memory_panic_while_a_run_executes_fails_the_run(fm):
    fm.write("o.star", 'def main(n = 1500000000):\n    return len("x" * n)\n')
    r = _limited(fm, "run", "o.star")
    assert "Traceback" not in r.stderr and "PanicException" not in r.stderr
    assert r.returncode == 1
    assert "Starlark failed internally: out of memory" in r.stderr
    run_id = next(ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("run "))
    assert fm.run_row(run_id)["state"] == "failed"


def test_check_passes_at_the_root_of_flowmetals_own_checkout(fm):
    r = fm("check", ".", "--root", REPO, cwd=REPO)
    assert "builtins.star" not in r.stdout
    assert r.returncode == 0, r.stdout[-3000:]
    assert " 0 error(s)" in r.stderr


def test_check_skips_virtualenvs_site_packages_and_ignored_paths(fm):
    bad = "def f(:\n"
    fm.write("main.star", "def main():\n    return 1\n")
    fm.write("py311/pyvenv.cfg", "home = /usr/bin\n")  # a venv not named venv/.venv
    fm.write("py311/share/x.star", bad)
    fm.write("deps/lib/python3.11/site-packages/pkg/x.star", bad)
    fm.write("vendor/x.star", bad)
    fm.write("gen/x.star", bad)
    fm.write("jobs/gen/kept.star", "K = 1\n")  # "/gen/*.star" is anchored at the root
    fm.write("jobs/x.generated.star", bad)
    fm.write(".flowmetalignore", "# not Flowmetal code\nvendor\n/gen/*.star\n*.generated.star\n")
    r = check(fm, ".")
    assert r.returncode == 0, r.stdout
    assert "2 file(s) checked" in r.stderr
    # A file named on the command line is checked even when a search would skip it.
    r = check(fm, "vendor/x.star")
    assert r.returncode == 2 and "vendor/x.star:1:7: error" in r.stdout


@pytest.mark.parametrize("command", ["run", "start", "check"])
def test_files_not_ending_in_star_are_refused_before_anything_is_created(tmp_path, command):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hostname").write_text("myhost\n")
    env = {k: v for k, v in os.environ.items() if k != "FLOWMETAL_DB"}
    r = subprocess.run([sys.executable, "-m", "flowmetal", command, str(etc / "hostname")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{etc / 'hostname'}: not a Flowmetal file (the names of Starlark files end in .star)" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert not (etc / ".flowmetal").exists() and not (tmp_path / ".flowmetal").exists()


def test_a_long_source_line_is_shown_around_the_column(fm):
    fm.write("p.star", DEEP["plus"])
    r = check(fm, "p.star")
    shown, caret = r.stdout.splitlines()[1:3]
    assert len(shown) < 200 and shown.strip().startswith("...") and shown.endswith("...")
    assert shown[len(caret) - 1] == "+"  # the caret is under the 201st `+`, column 406
