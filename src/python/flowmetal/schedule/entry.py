"""What the scheduler's parts share: a schedule it fires (`Entry`), time formats, the tick clock,
and how a schedules row says it is paused.

Nothing here reads the wall clock or the database.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flowmetal.lang.refs import parse_target
from flowmetal.schedule.cron import next_fires, resolve_timezone
from flowmetal.schedule.spec import ScheduleSpec

UTC = timezone.utc
FAILURE_STATES = ("failed", "timed_out")
R_SUPERSEDED = "superseded by a later fire"


def iso_utc(ts):
    """Epoch seconds as ISO 8601 UTC: "2026-01-01T02:00:00Z" (microseconds only when present)."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def iso_local(ts, tz):
    """Epoch seconds in a schedule's time zone, ISO 8601 with its offset."""
    return datetime.fromtimestamp(ts, resolve_timezone(tz)).isoformat()


def dt(ts):
    """Epoch seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


class FixedClock:
    """The clock that runs and cancellations created by one tick see: that tick's `now`."""

    def __init__(self, now):
        self._now = now

    def now(self):
        return self._now


def is_paused(row):
    """Is this schedules row paused (`flowmetal schedule pause`)?

    The row's `enabled` column is what the scheduler obeys; reconciling sets it
    from the file's `enabled`. A row that is not removed, whose stored spec is
    enabled but whose column says 0, was paused from the command line, and
    stays so until `resume` (an edit of the file does not resume it).
    """
    if row is None or row["removed_at"] is not None or row["enabled"]:
        return False
    try:
        return bool(json.loads(row["spec"]).get("enabled", True))
    except (TypeError, ValueError, AttributeError):
        return False


def split_target(ref):
    """A schedule's stored target, "jobs/x.star:fn" (or "//jobs/x.star:fn") -> ("jobs/x.star", "fn")."""
    file, function = parse_target(ref, default=None)
    return (file[2:] if file.startswith("//") else file), function


_FINGERPRINTS = {}  # (cron, timezone, enabled) -> ScheduleSpec.fingerprint(): validating a cron costs ~1 ms


def fingerprint(spec):
    key = (spec.cron, spec.timezone, spec.enabled)
    if key not in _FINGERPRINTS:
        if len(_FINGERPRINTS) > 100_000:
            _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = spec.fingerprint()
    return _FINGERPRINTS[key]


class NextFires:
    """The next fire time after a moment, remembered per (cron, zone) as (after, next) pairs.

    If N is the first fire strictly after P, then for every F with P <= F < N the
    first fire after F is N as well: schedules sharing a cron (100 every-second jobs,
    a thousand nightly ones) cost one cron walk, not one each.
    """

    def __init__(self):
        self._known = {}  # (cron, timezone) -> (P, N)

    def after(self, spec, floor):
        key = (spec.cron, spec.timezone)
        known = self._known.get(key)
        if known is not None and known[0] <= floor < known[1]:
            return known[1]
        found = next_fires(spec, after=dt(floor))
        nxt = found[0].timestamp() if found else None
        if nxt is not None:
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[key] = (floor, nxt)
        return nxt


@dataclass
class Entry:
    """A schedule this scheduler fires: its spec and the source texts its runs pin."""

    spec: ScheduleSpec
    texts: dict | None = None  # file name -> text; None: loaded from disk when first needed
    hashes: dict | None = None  # file name -> content hash (what the schedules row remembers)
    fingerprint: str = field(default="")

    def __post_init__(self):
        self.fingerprint = fingerprint(self.spec)
