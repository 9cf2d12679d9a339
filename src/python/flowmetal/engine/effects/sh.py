"""The `sh` effect: run a command and capture what it printed.

`cmd` is a string, run by `/bin/sh -c`, or a list of argv strings, run
directly (the program is looked up on the command's PATH).

Documented limits and behaviour:

- Output: the first `OUTPUT_LIMIT` (1 MiB) of stdout and of stderr are kept,
  decoded as UTF-8 (invalid bytes replaced). The rest is read and counted but
  dropped, and a note is appended:
  "\\n[flowmetal: output truncated, 49.0 MiB more not shown]".
  A command printing any amount never blocks on a full pipe.
- Log: each output line is also sent to the run's log (streams "stdout" and
  "stderr"), for the first 1 MiB and at most `LOG_LINE_LIMIT` (10,000) lines
  per stream; then one note line says the rest is not logged. A line longer
  than `LOG_LINE_MAX` (64 KiB) is logged in pieces.
- Secrets (`ctx.secrets`) are replaced by "***" in every logged line (a line
  logged in pieces is never cut inside a secret). The returned stdout and
  stderr are what the command printed: the gate masks them when it records
  the result, and gives the program the same text live and on replay
  (doc/effects.md, "Secrets"). Truncation never cuts inside a secret.
- Process group: the command runs in its own session and process group.
  A `timeout` or a cancellation (`ctx.cancelled`) sends SIGTERM to the whole
  group, then SIGKILL to whatever is left after `KILL_GRACE` (2 s).
- Leftovers: when the command's main process exits, processes it started in
  the background that redirected their output keep running (as under cron).
  Background processes that still hold stdout or stderr open after
  `DRAIN_GRACE` (1 s) are terminated the same way (SIGTERM, 2 s, SIGKILL),
  so the effect always finishes. A command that must leave a daemon behind
  should redirect its output (or start it with `setsid`).
- Environment: NOT the worker's environment. The base is
  PATH (the worker's PATH, or `DEFAULT_PATH` when it has none), HOME (the
  worker's, else the user's home directory), and LANG, LC_ALL, TZ, USER,
  LOGNAME, TMPDIR when the worker has them. `env` is added on top (and may
  override these). Then FLOWMETAL_IDEMPOTENCY_KEY (`<run id>:<sequence>`) and
  FLOWMETAL_RUN_ID are set; they cannot be overridden.
- stdin: a string is written to the command's stdin (UTF-8), then closed;
  without one the command reads from /dev/null.

Result fields: exit_code (int, or None when killed by a signal), signal
("SIGTERM"... or None), stdout, stderr, ok (exit code 0), duration (seconds),
timed_out, error (None when ok; "exit code 3", "killed by SIGTERM",
"timed out after 1s", "cancelled").

Outcomes (for `retry_on`): "nonzero" and "exit:N"; "signal" and
"signal:SIGNAME"; "timeout"; "cancelled" (never retried); none on success.
"""

import os
import pwd
import selectors
import signal
import subprocess
import time

from flowmetal.durations import format_duration, parse_duration
from flowmetal.engine.effects.registry import OUTSIDE, check, duration, effect, is_str_dict
from flowmetal.engine.effects.secrets import safe_cut
from flowmetal.errors import EffectError

OUTPUT_LIMIT = 1024 * 1024
LOG_LINE_LIMIT = 10_000
LOG_LINE_MAX = 64 * 1024
KILL_GRACE = 2.0
DRAIN_GRACE = 1.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR")

RETRY_ON = ["nonzero", "timeout", "signal"]

_CHUNK = 64 * 1024
_POLL = 0.05

LIVE_GROUPS = set()  # process groups of commands running now: a stopping worker ends what is left


def validate(args):
    """The argument check, run once by the gate before anything is recorded."""
    cmd = args["cmd"]
    check((isinstance(cmd, str) and cmd.strip()) or (isinstance(cmd, list) and cmd and cmd[0]
                                                     and all(isinstance(c, str) for c in cmd)),
          "sh", f"argument cmd must be a non-empty string or a non-empty list of strings, got {cmd!r}")
    env = args.get("env") or {}
    check(is_str_dict(env), "sh", "argument env must be a dict of strings to strings")
    for name, value in env.items():
        check(name and "=" not in name and "\0" not in name, "sh", f"invalid environment variable name {name!r}")
        check("\0" not in value, "sh", f"environment variable {name} must not contain NUL")
    check(args.get("cwd") is None or isinstance(args["cwd"], str), "sh", "argument cwd must be a string or None")
    check(args.get("stdin") is None or isinstance(args["stdin"], str), "sh", "argument stdin must be a string or None")
    check(isinstance(args.get("check", True), bool), "sh", "argument check must be True or False")
    duration("sh", "timeout", args.get("timeout"))


@effect("sh", OUTSIDE, validate=validate, retry=True,
        params={"env": {}, "cwd": None, "timeout": None, "stdin": None, "check": True, "retry": None},
        v1=("cmd", "env", "cwd", "timeout", "stdin", "check"),
        outcomes=lambda result: outcomes(result), retry_after=lambda result: retry_after(result),
        retry_on=tuple(RETRY_ON))
def perform(args, ctx):
    """Run `args["cmd"]` (validated by `validate`) and return its result dict (see the module docstring)."""
    cmd = args["cmd"]
    argv, shell = (["/bin/sh", "-c", cmd], True) if isinstance(cmd, str) else (list(cmd), False)
    env = command_env(args.get("env") or {}, ctx)
    cwd = args.get("cwd")
    if cwd is not None and not os.path.isdir(cwd):
        raise EffectError(f"working directory does not exist: {cwd}")
    timeout = parse_duration(args["timeout"]) if args.get("timeout") is not None else None
    stdin = args.get("stdin")

    started = time.monotonic()
    if ctx.cancelled.is_set():
        return _result(started, None, "", "", "cancelled", timeout, shell)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise EffectError(f"command not found: {ctx.mask(argv[0])}") from None
    except PermissionError:
        raise EffectError(f"command not executable: {ctx.mask(argv[0])}") from None
    except (OSError, ValueError) as exc:
        raise EffectError(f"cannot run {ctx.mask(argv[0])}: {ctx.mask(str(exc))}") from None

    extra = max((len(s.encode("utf-8")) for s in ctx.secrets if s), default=0) + 4
    out = _Capture("stdout", ctx, OUTPUT_LIMIT + extra)
    err = _Capture("stderr", ctx, OUTPUT_LIMIT + extra)
    deadline = None if timeout is None else started + timeout
    data = stdin.encode("utf-8") if stdin is not None else None
    LIVE_GROUPS.add(proc.pid)
    try:
        reason = _supervise(proc, data, out, err, deadline, ctx)
    finally:
        LIVE_GROUPS.discard(proc.pid)
    return _result(started, proc.returncode, out.text(), err.text(), reason, timeout, shell)


def outcomes(result):
    """Names of what happened, for `retry_on`: [] on success."""
    if result.get("error") == "cancelled":
        return ["cancelled"]
    if result.get("timed_out"):
        return ["timeout"]
    if result.get("signal"):
        return ["signal", f"signal:{result['signal']}"]
    code = result.get("exit_code")
    if code not in (0, None):
        return ["nonzero", f"exit:{code}"]
    return []


def retry_after(result):
    """Commands never ask for a delay: always None."""
    return None


def command_env(extra, ctx):
    """The command's environment: the documented base, `extra`, then FLOWMETAL_*."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": os.environ.get("HOME") or _home()}
    for name in PASSED_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)  # (checked by validate)
    env["FLOWMETAL_IDEMPOTENCY_KEY"] = ctx.idempotency_key
    env["FLOWMETAL_RUN_ID"] = ctx.run_id
    return env


def bounded_text(kept, limit, secrets, note=None):
    """Decode `kept` (UTF-8, replacing); with a `note`, cut to `limit` bytes and append it.

    The text is returned as the command printed it: the gate masks secrets when it
    records the result. The cut never splits a secret (it moves before it), so no part
    of one is left unmasked: `kept` runs past `limit` by a margin at least as long as
    the longest secret.
    """
    if note is None:
        return bytes(kept).decode("utf-8", "replace")
    cut = safe_cut(bytes(kept), limit, secrets)
    return bytes(kept[:cut]).decode("utf-8", "ignore") + "\n" + note


def format_size(n):
    """Human size: 512 bytes, 3.5 KiB, 49.0 MiB."""
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def _home():
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return "/"


class _Capture:
    """One output stream: keeps the first bytes, counts all, logs lines (bounded)."""

    def __init__(self, name, ctx, keep):
        self.name, self.ctx, self.keep = name, ctx, keep
        self.kept = bytearray()
        self.total = 0
        self._partial = b""
        self._lines = 0
        self._logging = True
        self.margin = max((len(v.encode("utf-8")) for v in ctx.secrets if v), default=0)

    def feed(self, data):
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        if self._logging:
            loggable = max(0, OUTPUT_LIMIT - self.total)
            self._log_bytes(data[:loggable])
            if len(data) > loggable:
                self._stop_logging(f"[flowmetal: {self.name} beyond {format_size(OUTPUT_LIMIT)} is not logged]")
        self.total += len(data)

    def finish(self):
        if self._logging and self._partial:
            self._pieces(self._partial, True)
        self._partial = b""

    def text(self):
        more = self.total - OUTPUT_LIMIT
        note = f"[flowmetal: output truncated, {format_size(more)} more not shown]" if more > 0 else None
        return bounded_text(self.kept, OUTPUT_LIMIT, self.ctx.secrets, note)

    def _log_bytes(self, chunk):
        *lines, rest = (self._partial + chunk).split(b"\n")
        for line in lines:
            if not self._logging:
                return
            self._pieces(line, True)
        # A piece is cut only once the rest runs a secret's length past the cut, so that a
        # secret straddling it is seen whole and the cut moves before it (masked in one piece).
        self._partial = self._pieces(rest, False) if self._logging else b""

    def _pieces(self, raw, final):
        """Log `raw` in pieces of at most LOG_LINE_MAX bytes, none cut inside a secret. A
        `final` line is logged whole; of a partial one, the rest is returned, kept until a
        secret straddling the next cut can be seen whole."""
        keep = 0 if final else self.margin
        while self._logging and len(raw) >= LOG_LINE_MAX + keep + (1 if final else 0):
            cut = safe_cut(raw, LOG_LINE_MAX, self.ctx.secrets) or LOG_LINE_MAX
            self._emit(raw[:cut])
            raw = raw[cut:]
        if final and self._logging:
            self._emit(raw)
            return b""
        return raw

    def _emit(self, raw):
        if self._lines >= LOG_LINE_LIMIT:
            self._stop_logging(f"[flowmetal: {self.name} has more than {LOG_LINE_LIMIT} lines; the rest is not logged]")
            return
        self._lines += 1
        self.ctx.log(self.name, self.ctx.mask(raw.decode("utf-8", "replace").rstrip("\r")))

    def _stop_logging(self, note):
        if self._logging:
            self._logging = False
            self._partial = b""
            self.ctx.log(self.name, note)


class _GroupKiller:
    """Ends a process group: SIGTERM now, SIGKILL to what is left after KILL_GRACE."""

    def __init__(self, pgid):
        self.pgid = pgid
        self.kill_at = time.monotonic() + KILL_GRACE
        self.killed_at = None
        self._signal(signal.SIGTERM)

    def step(self, now):
        if self.killed_at is None and now >= self.kill_at:
            self._signal(signal.SIGKILL)
            self.killed_at = now

    def finish(self):
        """Wait (at most until the grace ends) for the group to empty, then SIGKILL the rest."""
        while self.killed_at is None and self._alive() and time.monotonic() < self.kill_at:
            time.sleep(_POLL)
        if self.killed_at is None and self._alive():
            self._signal(signal.SIGKILL)
            self.killed_at = time.monotonic()

    def _alive(self):
        """Is any process of the group still running? Zombies (dead, not yet reaped) do not count."""
        if not self._signal(0):
            return False
        try:
            names = os.listdir("/proc")
        except OSError:
            return True  # no /proc: trust kill(0)
        for name in names:
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[2]) == self.pgid and fields[0] not in (b"Z", b"X"):
                    return True
        return False

    def _signal(self, sig):
        try:
            os.killpg(self.pgid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def _supervise(proc, stdin_data, out, err, deadline, ctx):
    """Pump stdin/stdout/stderr until the command ends; return None, "timeout" or "cancelled"."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    pending = memoryview(stdin_data or b"")
    if proc.stdin is not None:
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        else:
            proc.stdin.close()
    reason = killer = exited_at = None
    try:
        while True:
            if sel.get_map():
                events = sel.select(_POLL)
            else:  # every pipe is closed: wait for the exit itself, not for a poll interval
                events = []
                try:
                    proc.wait(_POLL)
                except subprocess.TimeoutExpired:
                    pass
            for key, _ in events:
                if key.data is None:
                    pending = _write_some(key.fileobj, pending)
                    if not pending:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    key.data.feed(chunk)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            reading = any(key.data is not None for key in sel.get_map().values())
            if killer is None:
                if exited_at is None and deadline is not None and now >= deadline:
                    reason, killer = "timeout", _GroupKiller(proc.pid)
                elif exited_at is None and ctx.cancelled.is_set():
                    reason, killer = "cancelled", _GroupKiller(proc.pid)
                elif exited_at is not None and reading and now >= exited_at + DRAIN_GRACE:
                    ctx.log("log", "[flowmetal: ending background processes that kept the command's output open]")
                    killer = _GroupKiller(proc.pid)
            if killer is not None:
                killer.step(now)
            if exited_at is not None and not reading:
                break
            if killer is not None and killer.killed_at is not None and now >= killer.killed_at + 0.5:
                break  # the pipes are held by processes outside the group: stop reading
    finally:
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
            key.fileobj.close()
        sel.close()
    proc.wait()
    if killer is not None:
        killer.finish()
    out.finish()
    err.finish()
    return reason


def _write_some(stream, pending):
    try:
        written = os.write(stream.fileno(), pending[:_CHUNK])
    except BlockingIOError:
        return pending
    except (BrokenPipeError, ConnectionResetError):
        return memoryview(b"")  # the command stopped reading: drop the rest
    return pending[written:]


def _result(started, returncode, stdout, stderr, reason, timeout, shell):
    exit_code = returncode if returncode is not None and returncode >= 0 else None
    sig = _signal_name(-returncode) if returncode is not None and returncode < 0 else None
    if reason == "cancelled":
        error = "cancelled"
    elif reason == "timeout":
        error = f"timed out after {format_duration(timeout)}"
    elif sig is not None:
        error = f"killed by {sig}"
    elif exit_code != 0:
        error = f"exit code {exit_code}"
        if shell and exit_code == 127:
            error += " (command not found)"
        elif shell and exit_code == 126:
            error += " (command not executable)"
    else:
        error = None
    return {
        "exit_code": exit_code,
        "signal": sig,
        "stdout": stdout,
        "stderr": stderr,
        "ok": error is None,
        "duration": round(time.monotonic() - started, 3),
        "timed_out": reason == "timeout",
        "error": error,
    }


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
