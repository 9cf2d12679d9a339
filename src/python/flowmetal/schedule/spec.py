"""A `schedule(...)` declaration, validated: `ScheduleSpec` and `validate_schedule`.

The loader collects the keyword arguments of each top-level `schedule(...)`
call and passes them here with the call's file and line. Validation checks
every parameter and returns every problem at once, as human messages that
start with ``schedule "NAME": `` (or ``schedule: `` when the name itself is
unusable); the loader adds ``file:line:col``.

Decisions where SPEC section 5 is silent:

- `run` and `on_failure` arrive already resolved by the loader: a string
  ``"LABEL:FUNCTION"`` (e.g. ``"//jobs/backup.star:backup"``). When the user
  passed something that is not a top-level function, the loader passes a
  `BadTarget("...why...")` instead and the text is reported as is. `run` is
  required; `on_failure` may be None.
- `name`: a non-empty string of ``A-Z a-z 0-9 _ . -`` (at most 100 chars).
- `cron`: see `flowmetal.schedule.cron` (5 fields, 6 with seconds LAST, or
  a macro). `timezone`: an IANA name, "UTC" or "local" (the machine's zone).
- Durations (`catchup_window`, `jitter`, `timeout`) use `parse_duration`:
  seconds or strings like "90s", "1h30m". `timeout` must be > 0;
  `catchup_window` None means no limit.
- `max_catchup` is an int from 1 to 10000 (each caught-up fire is listed).
- `args` is a dict with string keys and JSON values (default {}).
- Unknown parameters are errors, with a "did you mean" hint.
- `fingerprint()` hashes what decides WHEN the schedule fires: the cron
  expression (macros expanded, spaces collapsed), the time zone and `enabled`.
  A daemon that sees a new fingerprint treats the schedule as edited (no fire
  before that moment is started, SPEC 5). Changing `run`, `args`, `overlap`,
  catch-up settings, `jitter` or `timeout` does not reset the schedule: they
  take effect on the next fire.
"""

import difflib
import json
import re
from dataclasses import asdict, dataclass, field

from ..codec import canonical, digest
from ..durations import parse_duration
from ..errors import UserError
from ..lang.refs import parse_target
from .cron import normalize_cron, resolve_timezone

CATCHUP = ("none", "latest", "all")
OVERLAP = ("skip", "buffer_one", "buffer_all", "allow", "cancel_other")
MAX_CATCHUP_LIMIT = 10000

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class BadTarget:
    """What the loader passes for `run`/`on_failure` when the value is not a
    top-level function; `message` says what it was (e.g. 'got the string "x"')."""

    message: str


@dataclass(frozen=True)
class ScheduleSpec:
    """One validated schedule. Durations are seconds (float)."""

    name: str
    cron: str
    run: str  # "LABEL:FUNCTION"
    args: dict = field(default_factory=dict)
    timezone: str = "UTC"
    catchup: str = "latest"
    catchup_window: float | None = None
    max_catchup: int = 100
    overlap: str = "skip"
    jitter: float = 0.0
    timeout: float | None = None
    on_failure: str | None = None
    enabled: bool = True
    file: str = ""
    line: int = 0

    def __hash__(self):  # args is a dict; hash by the canonical form
        return hash(canonical(self.to_dict()))

    def fingerprint(self):
        """Stable digest of the fields that decide when this schedule fires."""
        return digest(
            canonical({"cron": normalize_cron(self.cron), "timezone": self.timezone, "enabled": self.enabled})
        )

    def to_dict(self):
        """JSON-ready form (for storage and `--json` output)."""
        return asdict(self)


DEFAULTS = {
    "args": {},
    "timezone": "UTC",
    "catchup": "latest",
    "catchup_window": None,
    "max_catchup": 100,
    "overlap": "skip",
    "jitter": 0.0,
    "timeout": None,
    "on_failure": None,
    "enabled": True,
}
PARAMETERS = ("name", "cron", "run", *DEFAULTS)


def _q(value):
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _choice(what, value, options):
    if value in options:
        return None
    listed = ", ".join(f'"{o}"' for o in options)
    return f"{what} must be one of {listed} — got {_q(value)}"


def _target(what, value, *, required):
    """None if `value` is a valid "LABEL:FUNCTION" target, else the problem."""
    if isinstance(value, BadTarget):
        return f"{what} must be a top-level function: {value.message}"
    if value is None:
        return f"{what} is required (a top-level function)" if required else None
    if isinstance(value, str):
        try:
            parse_target(value, default=None)
            return None
        except UserError:
            pass
    return f"{what} must be a top-level function, got {_q(value)}"


def validate_schedule(kwargs, *, file, line):
    """Check every parameter of one `schedule(...)` call.

    Returns (spec, []) when all is well, else (None, problems) with every
    problem found, each a message naming the schedule.
    """
    name = kwargs.get("name")
    prefix = f"schedule {_q(name)}: " if isinstance(name, str) and name else "schedule: "
    problems = []
    values = dict(DEFAULTS)

    for key in kwargs:
        if key not in PARAMETERS:
            hint = difflib.get_close_matches(key, PARAMETERS, n=1)
            problems.append(
                f'unknown parameter "{key}"' + (f' (did you mean "{hint[0]}"?)' if hint else "")
                + f" — known: {', '.join(PARAMETERS)}"
            )

    if name is None:
        problems.append("name is required")
    elif not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name must be a non-empty string of letters, digits, '_', '.', '-' — got {_q(name)}")

    cron = kwargs.get("cron")
    if cron is None:
        problems.append('cron is required (e.g. cron = "0 3 * * *")')
    elif not isinstance(cron, str):
        problems.append(f"cron must be a string, got {_q(cron)}")
    else:
        try:
            normalize_cron(cron)
        except ValueError as exc:
            problems.append(f"invalid cron expression {_q(cron)}: {exc}")

    for key, required in (("run", True), ("on_failure", False)):
        problem = _target(key, kwargs.get(key), required=required)
        if problem:
            problems.append(problem)
    values["on_failure"] = kwargs.get("on_failure")

    if "args" in kwargs:
        args = kwargs["args"]
        if args is None:
            args = {}
        if not isinstance(args, dict):
            problems.append(f"args must be a dict, got {_q(args)}")
        else:
            bad = [k for k in args if not isinstance(k, str)]
            if bad:
                problems.append(f"args keys must be strings, got {_q(bad[0])}")
            else:
                try:
                    canonical(args)
                except (TypeError, ValueError):
                    problems.append("args values must be JSON values (strings, numbers, bools, None, lists, dicts)")
        values["args"] = args

    if "timezone" in kwargs:
        tz = kwargs["timezone"]
        try:
            resolve_timezone(tz)
        except ValueError:
            problems.append(f'unknown timezone {_q(tz)} (use an IANA name like "Europe/Berlin", or "local")')
        values["timezone"] = tz

    for key, options in (("catchup", CATCHUP), ("overlap", OVERLAP)):
        if key in kwargs:
            problem = _choice(key, kwargs[key], options)
            if problem:
                problems.append(problem)
            values[key] = kwargs[key]

    for key, optional in (("catchup_window", True), ("jitter", False), ("timeout", True)):
        if key not in kwargs:
            continue
        value = kwargs[key]
        if value is None and optional:
            values[key] = None
            continue
        try:
            values[key] = parse_duration(value, key)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if key == "timeout" and values[key] <= 0:
            problems.append(f"timeout must be longer than 0s, got {_q(value)} (use None for no timeout)")

    if "max_catchup" in kwargs:
        value = kwargs["max_catchup"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CATCHUP_LIMIT:
            problems.append(f"max_catchup must be a whole number from 1 to {MAX_CATCHUP_LIMIT}, got {_q(value)}")
        values["max_catchup"] = value

    if "enabled" in kwargs:
        value = kwargs["enabled"]
        if not isinstance(value, bool):
            problems.append(f"enabled must be True or False, got {_q(value)}")
        values["enabled"] = value

    if problems:
        return None, [prefix + p for p in problems]
    spec = ScheduleSpec(
        name=name,
        cron=" ".join(cron.split()),
        run=kwargs["run"],
        file=file,
        line=line,
        **values,
    )
    return spec, []
