"""Turn a crontab into a `.star` workflow file: `flowmetal import-crontab FILE`.

`translate_crontab(text, source_name)` is pure: text in, a `Translation` out
(the Starlark text, the number of jobs, and every line that could not be
translated with its line number and reason); `convert_crontab` returns just
the text. Each job line becomes a top-level function ``job_N`` that runs the
command with ``sh(...)`` and a top-level ``schedule(name = "job-N", ...)``
firing it; the original line is kept as a comment above it. String literals
are written as JSON strings, which Starlark reads the same way.

How cron's semantics carry over (decisions):

- Time zone: cron uses the machine's zone, so jobs get ``timezone =
  "local"``; a ``CRON_TZ=`` or ``TZ=`` line sets the zone of the jobs after
  it (``TZ`` also stays in their environment, as cron passes it on). An
  unknown zone is not translated and the previous zone is kept.
- Catch-up and overlap: cron neither runs missed jobs later nor prevents
  overlapping runs, so every job gets ``catchup = "none"`` and ``overlap =
  "allow"``, written out so they are easy to change.
- Fire times: Flowmetal's cron expressions are Vixie cron's, day-of-month and
  day-of-week rule and daylight-saving rule included, so an expression is
  copied unchanged.
- ``VAR=value`` lines (quotes around the value are removed, as cron does)
  become ``env = {...}`` for the jobs after them. ``SHELL=`` makes those jobs
  run ``sh([SHELL, "-c", command])`` instead of ``/bin/sh -c``. ``HOME=``
  is also their ``cwd`` (cron starts jobs in ``$HOME``). ``MAILTO=`` with an
  address cannot be translated (Flowmetal records output instead of mailing
  it); an empty ``MAILTO=""`` (mail nothing) is what Flowmetal does anyway.
- ``%`` in a command: the first unescaped ``%`` ends the command; the rest is
  the command's standard input (``stdin = "..."``), each further ``%`` a
  newline and a final newline added, as cron does; ``\\%`` is a literal ``%``.
- System crontabs (``/etc/crontab``, ``/etc/cron.d/*``; ``system=True``):
  the sixth field is the user the job runs as. It is translated to
  ``sh(["runuser", "-u", USER, "--", SHELL, "-c", command])``, so such jobs
  need a worker running as root, as cron does (elsewhere ``runuser`` fails
  and so does the run: never silently as another user). ``runuser`` sets
  HOME, SHELL, USER and LOGNAME to the user's own, as cron does.
- Not translated, each reported as an `Untranslated` (and kept in the output
  as a ``# NOT TRANSLATED (...)`` comment): ``@reboot``, ``MAILTO=address``,
  unknown macros and time zones, invalid expressions, a command that is
  empty before ``%``, a bad user name, and lines that are not crontab syntax.
- Comments are carried over; blank lines are dropped.
- Each command runs with ``check = True``: a non-zero exit fails the run
  (where cron would have mailed the output).
"""

import json
import re
from dataclasses import dataclass, field

from .cron import check_cron, resolve_timezone

_ASSIGN = re.compile(r"^\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1\s*=\s*(.*?)\s*$")
_MACRO_LINE = re.compile(r"^\s*(@\S+)\s+(\S.*)$")
_FIELDS_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S.*)$")


def _s(text):
    """A Starlark string literal for `text`."""
    return json.dumps(text, ensure_ascii=False)


def _comment(text):
    return "# " + " ".join(str(text).splitlines())


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def split_percent(command):
    """(command, stdin or None) per cron's ``%`` rule (see the module docstring):
    the first unescaped ``%`` ends the command, later ones are newlines in stdin,
    ``\\%`` is a literal ``%``, and stdin ends with a newline."""
    parts = [p.replace("\\%", "%") for p in _UNESCAPED_PERCENT.split(command)]
    if len(parts) == 1:
        return parts[0], None
    stdin = "\n".join(parts[1:])
    if stdin and not stdin.endswith("\n"):
        stdin += "\n"
    return parts[0], stdin


_UNESCAPED_PERCENT = re.compile(r"(?<!\\)%")


@dataclass(frozen=True)
class Untranslated:
    """A crontab line that has no equivalent in the output, and why."""

    line: int  # 1-based line number in the crontab
    text: str
    reason: str


@dataclass(frozen=True)
class Translation:
    star: str  # the .star file's text
    jobs: int  # schedules written
    untranslated: list = field(default_factory=list)  # of Untranslated, in line order


def is_system_crontab(path):
    """True for /etc/crontab and the files of /etc/cron.d, whose lines have a user field."""
    from pathlib import PurePosixPath

    path = PurePosixPath(path)
    return path == PurePosixPath("/etc/crontab") or path.parent == PurePosixPath("/etc/cron.d")


class _State:
    def __init__(self):
        self.timezone = "local"
        self.env = {}
        self.shell = None
        self.cwd = None


def convert_crontab(text, source_name, *, prefix="job", system=False):
    """The text of a `.star` file equivalent to the crontab `text` (see `translate_crontab`)."""
    return translate_crontab(text, source_name, prefix=prefix, system=system).star


def translate_crontab(text, source_name, *, prefix="job", system=False):
    """A `Translation` of the crontab `text`.

    `source_name` is named in the header; schedules are named
    ``f"{prefix}-{N}"`` and their functions ``job_N``, N counting jobs from 1.
    With `system`, job lines have a user field after the five time fields
    (``/etc/crontab`` and ``/etc/cron.d/*``).
    """
    state = _State()
    body, skipped = [], []
    count = 0

    def not_translated(lineno, line, reason):
        skipped.append(Untranslated(lineno, line.strip(), reason))
        body.append(_comment(f"NOT TRANSLATED ({reason}), line {lineno}: {line}"))

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body.append(_comment(stripped[1:].lstrip()) if stripped != "#" else "#")
            continue
        assign = _ASSIGN.match(line)
        if assign:
            done, note = _assignment(state, assign.group(2), _unquote(assign.group(3)))
            if done:
                body.append(_comment(f"{stripped}  ->  {note}"))
            else:
                not_translated(lineno, line, note)
            continue
        job = _parse_job(line, system)
        if isinstance(job, str):
            not_translated(lineno, line, job)
            continue
        cron, user, command = job
        command, stdin = split_percent(command)
        if not command.strip():
            not_translated(lineno, line, "no command before %")
            continue
        count += 1
        body.extend(_job(state, count, prefix, cron, user, command, stdin, line, lineno))
        body.append("")
    header = [
        _comment(f"Generated by `flowmetal import-crontab` from {source_name}."),
        "# Each job keeps its crontab line as a comment above it. As under cron:",
        '#   - times are in the machine\'s zone (timezone = "local") unless CRON_TZ or TZ said otherwise;',
        '#   - missed fires are not run later (catchup = "none") and runs may overlap (overlap = "allow");',
        "#   - the cron expressions are read as Vixie cron reads them (day fields, daylight saving).",
        "# Unlike cron: commands run with sh() (/bin/sh -c, or SHELL) in the worker's environment plus the",
        "# variables set in the crontab, in the worker's directory unless HOME was set; their output is kept",
        "# in the run's record instead of being mailed, and a non-zero exit fails the run (check = True).",
    ]
    if system:
        header.append("# A system crontab: each job runs as its user with runuser, so the worker must run as root.")
    if skipped:
        header.append(f"# {len(skipped)} line(s) were not translated: see the NOT TRANSLATED comments.")
    header.append("")
    if count == 0:
        header.append("# (no job lines could be translated)")
    out = header + body
    while out and out[-1] == "":
        out.pop()
    return Translation("\n".join(_squeeze_blank(out)) + "\n", count, skipped)


def _squeeze_blank(lines):
    previous_blank = False
    for line in lines:
        blank = line == ""
        if not (blank and previous_blank):
            yield line
        previous_blank = blank


def _assignment(state, name, value):
    """(True, what it became) or (False, why it cannot be translated)."""
    if name in ("CRON_TZ", "TZ"):
        try:
            resolve_timezone(value)
        except ValueError:
            return False, (f"unknown time zone {_s(value)}; the jobs below keep "
                           f"timezone = {_s(state.timezone)}")
        state.timezone = value
        if name == "TZ":
            state.env["TZ"] = value
        return True, f"timezone = {_s(value)} for the jobs below"
    if name == "MAILTO":
        if not value:
            return True, "no mail, as Flowmetal never mails output (it keeps it in the run's record)"
        return False, ("Flowmetal keeps output in the run's record instead of mailing it; "
                       "use on_failure to be told of failures")
    if name == "SHELL":  # cron's default; only another shell changes anything
        state.shell = None if value in ("/bin/sh", "") else value
        if state.shell:
            state.env[name] = value
        else:
            state.env.pop(name, None)
        return True, f"the jobs below run with {value or '/bin/sh'} -c"
    state.env[name] = value
    if name == "HOME":
        state.cwd = value or None
        return True, "env and cwd for the jobs below"
    return True, "env for the jobs below"


_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")


def _parse_job(line, system):
    """(cron, user or None, command) or the reason the line cannot be translated."""
    macro = _MACRO_LINE.match(line)
    if macro:
        word = macro.group(1).lower()
        if word == "@reboot":
            return "@reboot runs at boot, not at a time; start it from your init system"
        if check_cron(word):
            return f"unknown macro {macro.group(1)}"
        cron, rest = word, macro.group(2)
    elif line.lstrip().startswith("@"):
        return "a macro with no command"
    else:
        fields = _FIELDS_LINE.match(line)
        if not fields:
            return "not a crontab line: expected 5 time fields and a command"
        cron = " ".join(fields.group(i) for i in range(1, 6))
        problem = check_cron(cron)
        if problem:
            return f"invalid cron expression: {problem}"
        rest = fields.group(6)
    if not system:
        return cron, None, rest
    user, command = (rest.split(None, 1) + [""])[:2]
    if not _USER.match(user):
        return f"a system crontab line needs a user name after the time fields, got {_s(user)}"
    if not command.strip():
        return "a system crontab line needs a command after the user name"
    return cron, user, command.lstrip()


def _job(state, n, prefix, cron, user, command, stdin, line, lineno):
    fn = f"job_{n}"
    out = [_comment(f"crontab line {lineno}: {line.strip()}")]
    if user is not None:
        out.append(_comment(f"runs as {user}: runuser needs a worker running as root, as cron does"))
        argv = ["runuser", "-u", user, "--", state.shell or "/bin/sh", "-c", command]
        cmd = "[" + ", ".join(_s(a) for a in argv) + "]"
    elif state.shell is None:
        cmd = _s(command)
    else:
        cmd = f"[{_s(state.shell)}, \"-c\", {_s(command)}]"
    args = [cmd]
    if state.env:
        pairs = ", ".join(f"{_s(k)}: {_s(v)}" for k, v in state.env.items())
        args.append(f"env = {{{pairs}}}")
    if state.cwd:
        args.append(f"cwd = {_s(state.cwd)}")
    if stdin is not None:
        args.append(f"stdin = {_s(stdin)}")
    args.append("check = True")
    out.append(f"def {fn}():")
    out.append("    return sh(")
    out.extend(f"        {a}," for a in args)
    out.append("    )")
    out.append("")
    out.append("schedule(")
    out.append(f"    name = {_s(f'{prefix}-{n}')},")
    out.append(f"    cron = {_s(cron)},")
    out.append(f"    run = {fn},")
    out.append(f"    timezone = {_s(state.timezone)},")
    out.append('    catchup = "none",')
    out.append('    overlap = "allow",')
    out.append(")")
    return out
