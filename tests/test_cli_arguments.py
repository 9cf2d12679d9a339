"""Arguments of a run are checked before the run exists: against the function's `def`
(lang/signature.py) and as strict JSON. References FILE:FUNCTION have one parser (lang/refs.py)."""

import pytest

from conftest import EXAMPLES


def run_count(fm):
    if not fm.db.exists():
        return 0
    st = fm.store()
    try:
        return len(st.list_runs(limit=1000))
    finally:
        st.close()


def error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


# --- issue 12 item 10: bad arguments create no run ------------------------------------


@pytest.mark.parametrize("command", ["run", "start"])
def test_unknown_argument_is_a_usage_error_and_creates_no_run(fm, command):
    r = fm(command, EXAMPLES / "hello.star", "-a", "nosuch=1", cwd=EXAMPLES.parent)
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [
        "error: examples/hello.star: main() has no parameter 'nosuch' (its parameters: name)"], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert run_count(fm) == 0


@pytest.mark.parametrize("command", ["run", "start"])
def test_missing_required_argument_is_a_usage_error_and_creates_no_run(fm, command):
    fm.write("two.star", "def main(a, b = 1, *, c, **rest):\n    return [a, b, c]\n")
    r = fm(command, "two.star", "-a", "b=2")
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == ["error: two.star: main() is missing the required arguments 'a', 'c'"]
    assert run_count(fm) == 0
    r = fm("run", "two.star", "-a", "a=1", "-a", "c=3", "-a", "extra=4")  # **rest takes any name
    assert r.returncode == 0, r.stderr
    assert run_count(fm) == 1


def test_signature_reads_starlark_headers():
    from flowmetal.lang.signature import signature

    text = (
        "X = 1\n"
        "def main(name: str = \"w(o)rld\",  # a comment with a )\n"
        "         items = [1, (2, 3)], *args, n: int, m = {\"a\": \")\"}, **kw) -> dict:\n"
        "    return 1\n"
        "def two(a, b = 1, *, c):\n    pass\n"
        "def two(z):\n    pass\n"
    )
    s = signature(text, "main")
    assert (s.params, s.keyword_only, s.varargs, s.varkw) == (("name", "items"), ("n", "m"), "args", "kw")
    assert s.required == {"n"}
    assert s.problems({"anything": 1}) == ["main() is missing the required argument 'n'"]
    assert signature(text, "two").params == ("z",)  # the last definition wins, as when the file runs
    assert signature(text, "nope") is None
    assert signature("def main(a, 'b):\n  pass\n", "main") is None  # unreadable: no check, Starlark binds


def test_refs_parse_targets_and_function_values():
    from flowmetal.errors import UserError
    from flowmetal.lang.refs import FunctionRef, parse_function_value, parse_target

    assert parse_target("jobs/x.star:backup") == FunctionRef("jobs/x.star", "backup")
    assert parse_target("x.star") == ("x.star", "main")
    assert parse_target("x.star:") == ("x.star", "main")
    assert parse_target("dir:odd/x.star") == ("dir:odd/x.star", "main")
    with pytest.raises(UserError, match="not a function name"):
        parse_target("x.star:no-dash")
    with pytest.raises(UserError, match="expected FILE:FUNCTION"):
        parse_target("x.star", default=None)
    assert parse_function_value("jobs/x.star.backup") == ("jobs/x.star", "backup")
    assert str(parse_function_value("a.star.f")) == "a.star:f"
    with pytest.raises(UserError, match="cannot tell which file"):
        parse_function_value("sh")


def test_check_reports_schedule_args_that_do_not_fit(fm):
    fm.write("s.star", (
        "def job(a, b = 1):\n    return a\n\n"
        "def on_fail(x):\n    pass\n\n"
        "def on_fail_ok(run_id, schedule, fire_time, state, error):\n    pass\n\n"
        'schedule(name = "good", cron = "0 3 * * *", run = job, args = {"a": 1}, on_failure = on_fail_ok)\n'
        'schedule(name = "extra", cron = "0 3 * * *", run = job, args = {"a": 1, "c": 2})\n'
        'schedule(name = "missing", cron = "0 3 * * *", run = job)\n'
        'schedule(name = "fail", cron = "0 3 * * *", run = job, args = {"a": 1}, on_failure = on_fail)\n'
    ))
    r = fm("check", ".")
    assert r.returncode == 2
    assert "s.star:11:1: error: schedule 'extra': args: job() has no parameter 'c' (its parameters: a, b)" in r.stdout
    assert "s.star:12:1: error: schedule 'missing': args: job() is missing the required argument 'a'" in r.stdout
    assert "s.star:13:1: error: schedule 'fail': on_failure: on_fail() has no parameters 'run_id'" in r.stdout
    assert "'good'" not in r.stdout
    assert "1 schedule(s), 3 error(s)" in r.stderr


# --- issue 12 item 4: out-of-range JSON numbers are usage errors --------------------


@pytest.mark.parametrize("args", [
    ["-a", "n:=NaN"], ["-a", "n:=1e999"], ["-a", "n:=-Infinity"], ["--args", '{"n": NaN}'],
    ["--args", '{"n": [1e400]}'], ["-a", "n:=1" + "0" * 5000],
])
def test_non_finite_json_argument_is_a_usage_error(fm, args):
    fm.write("n.star", "def main(n):\n    return n\n")
    r = fm("run", "n.star", *args)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "is not valid JSON" in lines[0] and len(lines[0]) < 300, r.stderr
    assert run_count(fm) == 0


def test_non_finite_signal_payload_is_a_usage_error(fm):
    fm.write("w.star", "def main():\n    return wait_signal('go')\n")
    run_id = fm("start", "w.star").stdout.strip()
    for payload in ("NaN", "1e999", '{"x": Infinity}'):
        r = fm("signal", run_id, "go", payload)
        assert r.returncode == 2, r.stderr
        assert "the signal payload is not valid JSON" in r.stderr and "internal error" not in r.stderr
    r = fm("signal", run_id, "go", "1.5")
    assert r.returncode == 0, r.stderr
