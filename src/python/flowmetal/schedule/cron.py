"""Fire-time arithmetic for cron expressions: pure functions, time passed in.

Syntax (what `check_cron` accepts)
----------------------------------
Vixie cron's, parsed and matched by `flowmetal.schedule.cronexpr` (its
docstring has the details):

- 5 fields: ``minute hour day-of-month month day-of-week``, with ranges,
  steps, lists and names (``mon-fri``, ``jan``); ``0`` and ``7`` are Sunday.
  Also ``L`` and ``LW`` in day-of-month, ``5L`` (last Friday) and ``5#3``
  (third Friday) in day-of-week.
- 6 fields: the sixth is **seconds** (``0 3 * * * 30`` is 03:00:30 daily and
  ``* * * * * *`` is every second). Fields 1-5 keep their usual meaning, so
  the minute is always the first field and the hour the second.
- Macros: ``@hourly @daily @midnight @weekly @monthly @yearly @annually``
  (any case). ``@reboot`` is not a time and is refused.
- Refused: 7 fields (a year field), Jenkins-style ``H`` and random ``R``
  (fire times must be the same in every process; use the schedule's
  ``jitter`` to spread load), expressions that never fire (``0 0 31 2 *``).

Day-of-month and day-of-week, as Vixie cron: when either field starts with
``*`` (``*``, ``*/4``) a day must match both; when both are restricted, a day
matching either fires.

Time zones
----------
A schedule's time zone is an IANA name (``zoneinfo``), ``"UTC"``, or
``"local"``: the machine's zone, taken from ``$TZ`` if that names a zone,
else from ``/etc/localtime``, else UTC. Resolving ``"local"`` reads the
environment; nothing here reads the clock.

Daylight saving (SPEC section 5), as Vixie cron
-----------------------------------------------
Fire times are found by walking *naive local wall times* and mapping each
wall time to real instants:

- A **wildcard** job, one whose minute field or hour field starts with ``*``
  (``*``, ``*/15``; ``@hourly`` is ``0 * * * *``), follows real time: a wall
  time that occurs twice (clocks go back) fires twice, a wall time that does
  not exist (clocks go forward) does not fire. ``0 * * * *`` in Europe/Berlin
  fires 23 times on 2026-03-29 and 25 times on 2026-10-25; ``* 1 * * *`` in
  America/New_York fires 120 times on 2026-11-01. With six fields the
  minute and hour are still fields 1 and 2; the seconds field does not
  count (``0 3 * * * *`` is not a wildcard job, ``* 3 * * * 0`` is).
- Any other job has a fixed time of day and keeps wall-clock semantics: a
  repeated wall time fires once, at its first occurrence; a skipped wall
  time fires once at the first valid instant after the gap (the transition
  itself: ``30 2 * * *`` Berlin fires at 03:00+02:00 on 2026-03-29). Several
  skipped wall times collapse into that one instant, and into a fire at
  that instant itself.

This holds for any offset change, including 30-minute shifts
(Australia/Lord_Howe) and zones at odd offsets (Pacific/Chatham,
America/St_Johns). All returned datetimes are aware and in UTC, ascending,
without duplicates.
"""

import hashlib
import math
import os
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cronexpr import CronSyntaxError, parse

UTC = timezone.utc

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_RANDOM_OR_HASH = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")
_SECOND = timedelta(seconds=1)
_NEVER = "it never fires (no date matches it)"


# ---------------------------------------------------------------- expressions


@lru_cache(maxsize=4096)  # every cron function calls this
def normalize_cron(expr):
    """The expression in its canonical text: macros expanded, spaces collapsed.

    Raises ValueError with a readable reason if the expression is not valid.
    """
    if not isinstance(expr, str):
        raise ValueError(f"a cron expression must be a string, got {type(expr).__name__}")
    text = " ".join(expr.split())
    if not text:
        raise ValueError("empty cron expression")
    if text.startswith("@"):
        key = text.lower()
        if key == "@reboot":
            raise ValueError("@reboot is not a time; Flowmetal schedules only fire on times")
        if key not in MACROS:
            raise ValueError(f"unknown macro {text} (use one of {', '.join(MACROS)})")
        return MACROS[key]
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday) or 6 (plus seconds last), got {len(fields)}"
        )
    if _RANDOM_OR_HASH.search(text):
        raise ValueError("H and R (hashed/random fields) are not supported; use jitter to spread runs")
    try:
        parsed = parse(text)
    except CronSyntaxError as exc:
        raise ValueError(str(exc)) from None
    if not parsed.ever_fires():
        raise ValueError(_NEVER)
    return text


def _parsed(expr):
    return parse(normalize_cron(expr))


def check_cron(expr):
    """None if `expr` is a valid schedule expression, else the reason (a string)."""
    try:
        normalize_cron(expr)
    except ValueError as exc:
        return str(exc)
    return None


def follows_real_time(expr):
    """True for a wildcard job (minute or hour field starts with ``*``): DST follows real time."""
    return _parsed(expr).real_time


# ----------------------------------------------------------------- time zones


def resolve_timezone(name):
    """A tzinfo for ``"UTC"``, ``"local"`` or an IANA name. ValueError if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"time zone must be a non-empty string, got {name!r}")
    if name == "local":
        return local_timezone()
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f'unknown timezone "{name}" (use an IANA name like "Europe/Berlin", or "local")') from None


def local_timezone():
    """The machine's zone: ``$TZ`` if it names a zone, else /etc/localtime, else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            if tz.startswith("/"):
                with open(tz, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=tz)
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # a POSIX rule string like "CET-1CEST": fall back to the system zone
    path = "/etc/localtime"
    real = os.path.realpath(path)
    if "zoneinfo/" in real:
        try:
            return ZoneInfo(real.split("zoneinfo/", 1)[1])
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open(path, "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


def _tz(tz):
    return resolve_timezone(tz) if isinstance(tz, str) else tz


# ------------------------------------------------------------- wall -> instant


def _instants(wall, tz, real_time):
    """Map a naive local wall time to the UTC instants it denotes under the DST rule."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    off0, off1 = first.utcoffset(), second.utcoffset()
    if off0 == off1:
        return [(wall - off0).replace(tzinfo=UTC)]
    if off0 > off1:  # repeated wall time (clocks went back): fold=0 is the earlier instant
        early = (wall - off0).replace(tzinfo=UTC)
        late = (wall - off1).replace(tzinfo=UTC)
        return [early, late] if real_time else [early]
    # skipped wall time (clocks went forward): fold=0 uses the offset before the gap
    if real_time:
        return []
    return [_transition(wall - off1, wall - off0, off1, tz)]


def _transition(lo, hi, after_offset, tz):
    """First instant (whole seconds, UTC) in (lo, hi] whose offset is `after_offset`."""
    lo_s, hi_s = int(lo.replace(tzinfo=UTC).timestamp()), int(hi.replace(tzinfo=UTC).timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == after_offset:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _walk(expr, wall, reverse):
    """Matching naive wall times strictly after `wall` (ascending) or strictly
    before it (descending, with reverse=True)."""
    step = expr.at_or_before if reverse else expr.next_after
    cursor = wall - _SECOND if reverse else wall
    while (found := step(cursor)) is not None:
        yield found
        cursor = found - _SECOND if reverse else found


def _offset_span(tz, at, hours):
    offsets = [datetime.fromtimestamp((at + timedelta(hours=h)).timestamp(), tz).utcoffset() for h in hours]
    return min(offsets), max(offsets)


def iter_fires(cron, tz, start, *, reverse=False):
    """Fire instants after `start` (exclusive), ascending; with reverse=True, at or
    before `start` (inclusive), descending. An endless generator (it ends only for
    an expression that stops matching). `tz` is a tzinfo or a zone name."""
    expr = _parsed(cron)
    zone = _tz(tz)
    real_time = expr.real_time
    start = start.astimezone(UTC)
    here = datetime.fromtimestamp(start.timestamp(), zone).utcoffset()
    wall = (start.replace(tzinfo=None) + here).replace(microsecond=0)
    # Wall times near `start` whose instant lies on the other side of a nearby
    # offset change: widen the walk by the size of that change.
    if reverse:
        _, hi = _offset_span(zone, start, (-6, -12, -26))
        wall += max(hi - here, timedelta(0)) + _SECOND
    else:
        lo, _ = _offset_span(zone, start, (6, 12, 26))
        wall -= max(here - lo, timedelta(0))
    walls = _walk(expr, wall, reverse)
    deferred = []  # second occurrences of repeated wall times, emitted after the fold
    last = None
    while True:
        candidate = next(walls, None)
        found = [] if candidate is None else _instants(candidate, zone, real_time)
        if reverse:
            found.reverse()
        if len(found) == 2:
            now_part, later_part = found
            found = [now_part]
            deferred.append(later_part)
        elif deferred:
            found = deferred + found
            deferred = []
        for instant in found:
            if reverse and instant > start or not reverse and instant <= start:
                continue
            if last is not None and (instant >= last if reverse else instant <= last):
                continue
            last = instant
            yield instant
        if candidate is None:
            return


# ---------------------------------------------------------------- public API


def _cron_and_zone(spec_or_cron, tz):
    if isinstance(spec_or_cron, str):
        return spec_or_cron, ("UTC" if tz is None else tz)
    return spec_or_cron.cron, (spec_or_cron.timezone if tz is None else tz)


def next_fires(spec_or_cron, tz=None, after=None, count=1):
    """The next `count` fire times strictly after `after` (aware), as aware UTC datetimes.

    `spec_or_cron` is a cron string or anything with `.cron` and `.timezone`
    (a ScheduleSpec); `tz` (name or tzinfo) overrides the spec's zone.
    """
    if after is None:
        raise ValueError("next_fires needs `after`: the time to count from")
    cron, zone = _cron_and_zone(spec_or_cron, tz)
    out = []
    for instant in iter_fires(cron, zone, after):
        if len(out) >= count:
            break
        out.append(instant)
    return out


def previous_fires(spec_or_cron, tz=None, before=None, count=1, *, after=None):
    """Up to `count` newest fire times at or before `before` and strictly after
    `after` (if given), ascending. Cost is proportional to `count`, not to the span."""
    if before is None:
        raise ValueError("previous_fires needs `before`")
    cron, zone = _cron_and_zone(spec_or_cron, tz)
    out = []
    for instant in iter_fires(cron, zone, before, reverse=True):
        if len(out) >= count or (after is not None and instant <= after):
            break
        out.append(instant)
    out.reverse()
    return out


def fires_between(cron, tz, start, end, *, limit=None):
    """Fire times in (start, end], ascending; at most `limit` of them if given."""
    out = []
    for instant in iter_fires(cron, tz, start):
        if instant > end or (limit is not None and len(out) >= limit):
            break
        out.append(instant)
    return out


def stable_jitter(schedule_name, fire_time, max_seconds):
    """A delay in [0, max_seconds), the same for the same schedule and fire time
    in every process (sha256 of the name and the UTC instant; millisecond steps)."""
    if not max_seconds or max_seconds <= 0:
        return 0.0
    key = f"{schedule_name}\n{fire_time.astimezone(UTC).isoformat()}".encode("utf-8")
    fraction = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return math.floor(fraction * max_seconds * 1000) / 1000
