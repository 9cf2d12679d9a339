"""The sh effect against real processes."""

import os
import sys
import threading
import time

import pytest

from flowmetal.engine.effects import EffectContext
from flowmetal.engine.effects import sh
from flowmetal.engine.effects.registry import BuiltinError, lookup
from flowmetal.errors import EffectError


class Ctx(EffectContext):
    """An EffectContext that keeps its log lines."""

    def __init__(self, **kw):
        self.lines = []
        super().__init__(run_id=kw.pop("run_id", "run1"), seq=kw.pop("seq", 7), log=self._log, **kw)

    def _log(self, stream, line):
        self.lines.append((stream, line))


def run(args, **ctx):
    return sh.perform(args, Ctx(**ctx))


def alive(pid):
    """True when `pid` is a running process (a zombie awaiting its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def wait_dead(pids, within=1.0):
    end = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


def read_pids(path):
    return [int(line) for line in path.read_text().split()]


# -- forms, environment, cwd, stdin -----------------------------------------

def test_string_form_runs_through_sh():
    r = run({"cmd": "echo hello; echo oops >&2"})
    assert r == {
        "exit_code": 0, "signal": None, "stdout": "hello\n", "stderr": "oops\n", "ok": True,
        "duration": r["duration"], "timed_out": False, "error": None,
    }
    assert 0 <= r["duration"] < 5
    assert "cmd" not in r
    assert sh.outcomes(r) == []


def test_argv_form_passes_arguments_verbatim():
    r = run({"cmd": ["printf", "%s|", "a b", "$HOME", "c"]})
    assert r["stdout"] == "a b|$HOME|c|"
    assert r["ok"]


def test_environment_is_a_small_base_plus_additions(monkeypatch):
    monkeypatch.setenv("FLOWMETAL_TEST_LEAK", "should-not-be-seen")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    r = run({"cmd": ["env"], "env": {"GREETING": "hi there", "HOME": "/custom/home"}}, run_id="r42", seq=3)
    env = dict(line.split("=", 1) for line in r["stdout"].splitlines())
    assert "FLOWMETAL_TEST_LEAK" not in env
    assert env["GREETING"] == "hi there"
    assert env["HOME"] == "/custom/home"
    assert env["PATH"] == os.environ["PATH"]
    assert env["TZ"] == "Europe/Berlin"
    assert env["FLOWMETAL_IDEMPOTENCY_KEY"] == "r42:3"
    assert env["FLOWMETAL_RUN_ID"] == "r42"
    allowed = {"PATH", "HOME", "GREETING", "FLOWMETAL_IDEMPOTENCY_KEY", "FLOWMETAL_RUN_ID", *sh.PASSED_THROUGH}
    assert set(env) <= allowed | {"PWD", "SHLVL", "_"}


def test_idempotency_key_cannot_be_overridden_and_is_seen_by_the_shell():
    r = run({"cmd": 'echo "$FLOWMETAL_IDEMPOTENCY_KEY"', "env": {"FLOWMETAL_IDEMPOTENCY_KEY": "mine"}}, run_id="abc", seq=12)
    assert r["stdout"] == "abc:12\n"


def test_base_path_falls_back_to_default(monkeypatch):
    monkeypatch.delenv("PATH")
    r = run({"cmd": ["/usr/bin/env"]})
    assert f"PATH={sh.DEFAULT_PATH}\n" in r["stdout"]


def test_cwd(tmp_path):
    r = run({"cmd": "pwd", "cwd": str(tmp_path)})
    assert os.path.realpath(r["stdout"].strip()) == os.path.realpath(tmp_path)


def test_stdin_is_written_and_closed():
    assert run({"cmd": "cat", "stdin": "line 1\nline 2\n"})["stdout"] == "line 1\nline 2\n"
    assert run({"cmd": "cat"})["stdout"] == ""  # no stdin: /dev/null, not the test's terminal
    big = "x" * (3 * 1024 * 1024)
    r = run({"cmd": "wc -c", "stdin": big})
    assert r["stdout"].strip() == str(len(big))


def test_stdin_not_read_by_the_command_does_not_block():
    r = run({"cmd": "true", "stdin": "y" * (5 * 1024 * 1024)})
    assert r["ok"]


# -- failures ------------------------------------------------------------------

def test_exit_code():
    r = run({"cmd": "echo partial; exit 3"})
    assert (r["exit_code"], r["ok"], r["error"], r["signal"]) == (3, False, "exit code 3", None)
    assert r["stdout"] == "partial\n"
    assert sh.outcomes(r) == ["nonzero", "exit:3"]


def test_death_by_signal_is_reported_as_such():
    r = run({"cmd": "kill -TERM $$"})
    assert (r["exit_code"], r["signal"], r["ok"], r["error"]) == (None, "SIGTERM", False, "killed by SIGTERM")
    assert sh.outcomes(r) == ["signal", "signal:SIGTERM"]
    r = run({"cmd": [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]})
    assert r["signal"] == "SIGKILL" and sh.outcomes(r) == ["signal", "signal:SIGKILL"]


def test_missing_program_in_argv_form_is_an_effect_error():
    with pytest.raises(EffectError, match="command not found: no-such-program-xyz"):
        run({"cmd": ["no-such-program-xyz", "--help"]})


def test_missing_program_in_string_form_is_exit_127():
    r = run({"cmd": "no-such-program-xyz --help"})
    assert r["exit_code"] == 127 and not r["ok"]
    assert "command not found" in r["error"]
    assert sh.outcomes(r) == ["nonzero", "exit:127"]


def test_missing_cwd_is_an_effect_error(tmp_path):
    with pytest.raises(EffectError, match="working directory does not exist"):
        run({"cmd": "pwd", "cwd": str(tmp_path / "nope")})


@pytest.mark.parametrize("cmd", ["", "   ", [], [""], ["ls", 3], None])
def test_bad_cmd_is_refused_by_the_registry_check(cmd):
    with pytest.raises(BuiltinError, match="sh\\(\\): argument cmd must be"):
        lookup("sh").validate({"cmd": cmd})


@pytest.mark.parametrize("args, message", [
    ({"cmd": "true", "timeout": "soon"}, "timeout"),
    ({"cmd": "true", "env": {"A=B": "1"}}, "invalid environment variable name"),
    ({"cmd": "true", "env": {"A": 1}}, "env must be a dict of strings"),
    ({"cmd": "true", "stdin": 3}, "stdin must be a string"),
    ({"cmd": "true", "check": "yes"}, "check must be True or False"),
])
def test_bad_arguments_are_refused_by_the_registry_check(args, message):
    with pytest.raises(BuiltinError, match=message):
        lookup("sh").validate(args)


# -- time limits, cancellation, process groups --------------------------------

def test_timeout_kills_the_command_promptly():
    t = time.monotonic()
    r = run({"cmd": "sleep 100", "timeout": "1s"})
    assert time.monotonic() - t < 2.0
    assert r["timed_out"] and not r["ok"]
    assert r["error"] == "timed out after 1s"
    assert sh.outcomes(r) == ["timeout"]


def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    cmd = f"sleep 100 & echo $! >> {pids}; (sleep 100; echo never) & echo $! >> {pids}; echo $$ >> {pids}; wait"
    t = time.monotonic()
    r = run({"cmd": cmd, "timeout": 1})
    assert time.monotonic() - t < 2.0
    assert r["timed_out"]
    assert len(read_pids(pids)) == 3
    assert wait_dead(read_pids(pids)) == []


def test_processes_ignoring_sigterm_get_sigkill_after_the_grace(tmp_path):
    pids = tmp_path / "pids"
    cmd = f"trap '' TERM; sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    t = time.monotonic()
    r = run({"cmd": cmd, "timeout": "0.5s"})
    elapsed = time.monotonic() - t
    assert 0.5 + sh.KILL_GRACE - 0.2 < elapsed < 0.5 + sh.KILL_GRACE + 1.0
    assert r["timed_out"] and r["signal"] == "SIGKILL"
    assert wait_dead(read_pids(pids)) == []


def test_cancellation_terminates_the_group(tmp_path):
    pids = tmp_path / "pids"
    ctx = Ctx()
    threading.Timer(0.3, ctx.cancelled.set).start()
    t = time.monotonic()
    r = sh.perform({"cmd": f"sleep 100 & echo $! >> {pids}; sleep 100"}, ctx)
    assert time.monotonic() - t < 1.5
    assert r["error"] == "cancelled" and not r["ok"] and not r["timed_out"]
    assert sh.outcomes(r) == ["cancelled"]
    assert wait_dead(read_pids(pids)) == []


def test_already_cancelled_does_not_start(tmp_path):
    ctx = Ctx()
    ctx.cancelled.set()
    r = sh.perform({"cmd": f"touch {tmp_path / 'ran'}"}, ctx)
    assert r["error"] == "cancelled" and r["exit_code"] is None
    assert not (tmp_path / "ran").exists()


def test_background_process_holding_the_output_is_ended(tmp_path):
    pids = tmp_path / "pids"
    t = time.monotonic()
    r = run({"cmd": f"sleep 100 & echo $! > {pids}; echo done"})
    assert time.monotonic() - t < sh.DRAIN_GRACE + 1.5
    assert r["ok"] and r["stdout"] == "done\n"
    assert wait_dead(read_pids(pids)) == []


def test_background_process_with_redirected_output_is_left_running(tmp_path):
    pids = tmp_path / "pids"
    r = run({"cmd": f"sleep 30 > /dev/null 2>&1 & echo $! > {pids}"})
    assert r["ok"]
    [pid] = read_pids(pids)
    try:
        assert alive(pid)
    finally:
        os.kill(pid, 9)


# -- output bounds, logging, masking --------------------------------------------

def test_huge_output_finishes_and_is_truncated_with_a_note():
    ctx = Ctx()
    t = time.monotonic()
    r = sh.perform({"cmd": "yes hello | head -c 52428800; echo tail >&2"}, ctx)
    assert time.monotonic() - t < 10
    assert r["ok"]
    assert r["stdout"].endswith("\n[flowmetal: output truncated, 49.0 MiB more not shown]")
    kept = r["stdout"].split("\n[flowmetal:")[0]
    assert len(kept.encode()) == sh.OUTPUT_LIMIT and kept.startswith("hello\nhello\n")
    assert r["stderr"] == "tail\n"
    stdout_lines = [line for stream, line in ctx.lines if stream == "stdout"]
    assert len(stdout_lines) == sh.LOG_LINE_LIMIT + 1
    assert set(stdout_lines[:-1]) == {"hello"}
    assert "not logged" in stdout_lines[-1]
    assert ("stderr", "tail") in ctx.lines


def test_one_huge_line_is_logged_in_bounded_pieces():
    ctx = Ctx()
    r = sh.perform({"cmd": "head -c 3145728 /dev/zero | tr '\\0' a"}, ctx)
    assert "2.0 MiB more not shown" in r["stdout"]
    sizes = [len(line) for stream, line in ctx.lines if stream == "stdout"]
    assert max(sizes) <= sh.LOG_LINE_MAX
    assert sum(s for s in sizes if s == sh.LOG_LINE_MAX) == sh.OUTPUT_LIMIT


def test_lines_are_logged_per_stream():
    ctx = Ctx()
    sh.perform({"cmd": "echo one; echo two >&2; printf 'no newline'"}, ctx)
    assert [line for stream, line in ctx.lines if stream == "stdout"] == ["one", "no newline"]
    assert [line for stream, line in ctx.lines if stream == "stderr"] == ["two"]


def test_invalid_utf8_is_replaced():
    r = run({"cmd": "printf 'caf\\351\\n'"})
    assert r["stdout"] == "caf\ufffd\n"


def test_secrets_are_masked_in_the_log_and_returned_as_printed():
    # (the gate masks the result when it records it: tests/test_secrets.py)
    ctx = Ctx(secrets=("hunter2",))
    r = sh.perform({"cmd": 'echo "token=$T"; echo "$T" >&2', "env": {"T": "hunter2"}}, ctx)
    assert r["stdout"] == "token=hunter2\n" and r["stderr"] == "hunter2\n"
    assert all("hunter2" not in line for _, line in ctx.lines)
    assert ("stdout", "token=***") in ctx.lines


def test_truncation_never_cuts_a_secret_in_two():
    secret = "S3CRET-VALUE"
    # put the secret across the 1 MiB boundary: the cut moves before it
    cmd = f"head -c {sh.OUTPUT_LIMIT - 5} /dev/zero | tr '\\0' a; printf '{secret}'; head -c 1000 /dev/zero"
    r = run({"cmd": cmd}, secrets=(secret,))
    assert "S3C" not in r["stdout"]
    assert r["stdout"].startswith("a" * (sh.OUTPUT_LIMIT - 5) + "\n[flowmetal: output truncated")


def test_a_secret_across_a_log_piece_boundary_is_masked():
    secret = "S3CRET-VALUE"
    # one long line with the secret across the 64 KiB piece boundary (issue 12 item 6)
    cmd = f"head -c {sh.LOG_LINE_MAX - 5} /dev/zero | tr '\\0' a; printf '{secret}'; head -c 1000 /dev/zero | tr '\\0' b"
    ctx = Ctx(secrets=(secret,))
    sh.perform({"cmd": cmd}, ctx)
    pieces = [line for stream, line in ctx.lines if stream == "stdout"]
    assert len(pieces) == 2
    joined = "".join(pieces)
    assert "S3C" not in joined and "VALUE" not in joined and "***" in pieces[1]
    assert all(len(p.encode()) <= sh.LOG_LINE_MAX for p in pieces)


def test_retry_after_is_none():
    assert sh.retry_after(run({"cmd": "exit 1"})) is None
    assert sh.RETRY_ON == ["nonzero", "timeout", "signal"]
