"""Turn a user crontab into a `.star` workflow file: `flowmetal import-crontab FILE`.

`convert_crontab(text, source_name)` is pure: text in, Starlark text out.
Each job line becomes a top-level function ``job_N`` that runs the command
with ``sh(...)`` and a top-level ``schedule(name = "job-N", ...)`` firing it;
the original line is kept as a comment above it. String literals are written
as JSON strings, which Starlark reads the same way.

How cron's semantics carry over (decisions):

- Time zone: cron uses the machine's zone, so jobs get ``timezone =
  "local"``; a ``CRON_TZ=`` or ``TZ=`` line sets the zone of the jobs after
  it (``TZ`` also stays in their environment, as cron passes it on). An
  unknown zone is reported in a comment and the previous zone is kept.
- Catch-up and overlap: cron neither runs missed jobs later nor prevents
  overlapping runs, so every job gets ``catchup = "none"`` and ``overlap =
  "allow"``, written out so they are easy to change.
- Day-of-month/day-of-week: croniter ORs them when both are restricted, as
  cron does (croniter's ``day_or=True`` default). Vixie cron also counts a
  field starting with ``*`` (``*/2``) as unrestricted and then requires
  BOTH; such lines get a ``NOTE`` comment, as Flowmetal will OR them.
- ``VAR=value`` lines (quotes around the value are removed, as cron does)
  become ``env = {...}`` for the jobs after them. ``SHELL=`` makes those jobs
  run ``sh([SHELL, "-c", command])`` instead of ``/bin/sh -c``. ``HOME=``
  is also their ``cwd`` (cron starts jobs in ``$HOME``). ``MAILTO=`` cannot
  be translated (Flowmetal records output instead of mailing it): comment.
- ``%`` in a command: the first unescaped ``%`` ends the command; the rest is
  the command's standard input (``stdin = "..."``), each further ``%`` a
  newline and a final newline added, as cron does; ``\\%`` is a literal ``%``.
- ``@reboot``, unknown macros, invalid expressions and lines that are not
  crontab syntax become ``# NOT TRANSLATED (...)`` comments.
- Comments are carried over; blank lines are dropped.
- Each command runs with ``check = True``: a non-zero exit fails the run
  (where cron would have mailed the output).
"""

import json
import re

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


def _day_fields_note(dom, dow):
    """A note when Vixie cron and croniter read the day fields differently."""
    if dom in ("*", "?") or dow in ("*", "?"):
        return None
    if dom.startswith("*") or dow.startswith("*"):
        return (
            f'NOTE: Vixie cron runs this only on days matching BOTH "{dom}" and "{dow}" '
            "(a day field starting with '*' makes it require both); Flowmetal, like most "
            "crons, runs it on days matching EITHER."
        )
    return None


class _State:
    def __init__(self):
        self.timezone = "local"
        self.env = {}
        self.shell = None
        self.cwd = None


def convert_crontab(text, source_name, *, prefix="job"):
    """The text of a `.star` file equivalent to the crontab `text`.

    `source_name` is named in the header; schedules are named
    ``f"{prefix}-{N}"`` and their functions ``job_N``, N counting jobs from 1.
    """
    state = _State()
    body = []
    count = 0
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
            body.extend(_assignment(state, assign.group(2), _unquote(assign.group(3)), line, lineno))
            continue
        job = _parse_job(line)
        if isinstance(job, str):
            body.append(_comment(f"NOT TRANSLATED ({job}), line {lineno}: {line}"))
            continue
        cron, command = job
        command, stdin = split_percent(command)
        if not command.strip():
            body.append(_comment(f"NOT TRANSLATED (no command before %), line {lineno}: {line}"))
            continue
        count += 1
        body.extend(_job(state, count, prefix, cron, command, stdin, line, lineno))
        body.append("")
    header = [
        _comment(f"Generated by `flowmetal import-crontab` from {source_name}."),
        "# Each job keeps its crontab line as a comment above it. As under cron:",
        '#   - times are in the machine\'s zone (timezone = "local") unless CRON_TZ or TZ said otherwise;',
        '#   - missed fires are not run later (catchup = "none") and runs may overlap (overlap = "allow");',
        "#   - day-of-month and day-of-week, both restricted, match when EITHER matches.",
        "# Unlike cron: commands run with sh() (/bin/sh -c, or SHELL) in the worker's environment plus the",
        "# variables set in the crontab, in the worker's directory unless HOME was set; their output is kept",
        "# in the run's record instead of being mailed, and a non-zero exit fails the run (check = True).",
        "",
    ]
    if count == 0:
        header.append("# (no job lines could be translated)")
    out = header + body
    while out and out[-1] == "":
        out.pop()
    return "\n".join(_squeeze_blank(out)) + "\n"


def _squeeze_blank(lines):
    previous_blank = False
    for line in lines:
        blank = line == ""
        if not (blank and previous_blank):
            yield line
        previous_blank = blank


def _assignment(state, name, value, line, lineno):
    if name in ("CRON_TZ", "TZ"):
        try:
            resolve_timezone(value)
        except ValueError:
            return [_comment(
                f"NOT TRANSLATED (unknown time zone {_s(value)}; the jobs below keep "
                f"timezone = {_s(state.timezone)}), line {lineno}: {line}"
            )]
        state.timezone = value
        if name == "TZ":
            state.env["TZ"] = value
        return [_comment(f"{line.strip()}  ->  timezone = {_s(value)} for the jobs below")]
    if name == "MAILTO":
        return [_comment(
            f"NOT TRANSLATED (Flowmetal keeps output in the run's record instead of mailing it; "
            f"use on_failure to be told of failures), line {lineno}: {line}"
        )]
    if name == "SHELL":  # cron's default; only another shell changes anything
        state.shell = None if value in ("/bin/sh", "") else value
        if state.shell:
            state.env[name] = value
        else:
            state.env.pop(name, None)
        return [_comment(f"{line.strip()}  ->  the jobs below run with {value or '/bin/sh'} -c")]
    state.env[name] = value
    notes = [_comment(f"{line.strip()}  ->  env for the jobs below")]
    if name == "HOME":
        state.cwd = value or None
        notes = [_comment(f"{line.strip()}  ->  env and cwd for the jobs below")]
    return notes


def _parse_job(line):
    """(cron, command) or the reason the line cannot be translated."""
    macro = _MACRO_LINE.match(line)
    if macro:
        word = macro.group(1).lower()
        if word == "@reboot":
            return "@reboot runs at boot, not at a time; start it from your init system"
        problem = check_cron(word)
        if problem:
            return f"unknown macro {macro.group(1)}"
        return word, macro.group(2)
    if line.lstrip().startswith("@"):
        return "a macro with no command"
    fields = _FIELDS_LINE.match(line)
    if not fields:
        return "not a crontab line: expected 5 time fields and a command"
    cron = " ".join(fields.group(i) for i in range(1, 6))
    problem = check_cron(cron)
    if problem:
        return f"invalid cron expression: {problem}"
    return cron, fields.group(6)


def _job(state, n, prefix, cron, command, stdin, line, lineno):
    fn = f"job_{n}"
    out = [_comment(f"crontab line {lineno}: {line.strip()}")]
    if not cron.startswith("@"):
        note = _day_fields_note(cron.split(" ")[2], cron.split(" ")[4])
        if note:
            out.append(_comment(note))
    cmd = _s(command) if state.shell is None else f"[{_s(state.shell)}, \"-c\", {_s(command)}]"
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
