"""What a scheduler should do about a schedule's fire times: pure decisions.

`plan_fires(spec, last_fire, since, now)` lists every fire time the daemon
has not handled yet, each with an action ("start" or "miss") and a reason.
It reads no clock and no database: the daemon passes the persisted last fire,
the moment this version of the schedule became active, and the time.

Decisions (SPEC section 5 is silent on these):

- Candidates are the fire times f with ``since <= f <= now`` and
  ``f > last_fire``. A fire exactly at `since` counts (it is not *before*
  the schedule was added); fires before `since` are not listed at all.
- On time: only the newest candidate, and only if ``now - f <= grace``
  (default `ON_TIME_GRACE` = 60 s). It is started (reason None). Every other
  candidate is a *missed* fire, handled by `catchup`:
  - "none": every missed fire is recorded as "catchup=none".
  - "latest": the newest missed fire is started (reason "catch-up") unless
    an on-time fire exists; the others are "superseded by a later fire".
  - "all": missed fires are started oldest first (reason "catch-up"), at
    most `max_catchup` of them, keeping the NEWEST ones, as Temporal's
    catch-up and Airflow's backfill run missed intervals in time order; the
    older excess is "max_catchup exceeded".
  - For "latest" and "all", a missed fire older than `catchup_window` (when
    set; the bound is inclusive) is "outside the catch-up window", whatever
    its rank.
- A disabled schedule starts nothing: each candidate is a miss "disabled"
  (the daemon records it, so `--list` shows why nothing ran). A paused one
  (`flowmetal schedule pause`, ``paused=True``) likewise, as "paused".
- Bounded work: at most `list_limit` (default 1000, raised to
  max_catchup + 1 for "all") candidates are listed one by one, the newest
  ones; anything older is summarised as one `Fire` per reason with
  ``through`` set: it stands for every fire from ``nominal`` through
  ``through`` (inclusive), all missed for that reason. Finding the newest
  fires walks backwards from `now`, so a year of every-second fires costs
  the same as a day of them.

Overlap (`overlap_decision`) is separate: the daemon asks it for each fire
the plan says to start, given how many runs of the schedule are active and
how many fires are buffered.

What the daemon does with a plan: record every entry (unique per schedule
and nominal time, so a second scheduler cannot fire it again), then store
as the new last fire the newest ``through or nominal`` in the plan. A
started fire's run may begin `stable_jitter(name, nominal, spec.jitter)`
seconds after its nominal time (see `cron.stable_jitter`).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .cron import iter_fires, previous_fires

ON_TIME_GRACE = 60.0
LIST_LIMIT = 1000

START, MISS = "start", "miss"
CATCH_UP = "catch-up"
R_DISABLED = "disabled"
R_PAUSED = "paused"
R_NONE = "catchup=none"
R_SUPERSEDED = "superseded by a later fire"
R_WINDOW = "outside the catch-up window"
R_MAX = "max_catchup exceeded"

UTC = timezone.utc


@dataclass(frozen=True)
class Fire:
    """One decision about one nominal fire time (aware UTC).

    action: "start" or "miss". reason: None for an on-time start, "catch-up"
    for a started missed fire, else why it was missed. through: only on a
    summary entry — it then covers every fire from `nominal` to `through`.
    """

    nominal: datetime
    action: str
    reason: str | None = None
    through: datetime | None = None


def _decide(spec, rank, age, on_time_newest, grace, window, paused=False):
    """The decision for the candidate at `rank` (0 = newest) that is `age` seconds old."""
    if paused:
        return MISS, R_PAUSED
    if not spec.enabled:
        return MISS, R_DISABLED
    if rank == 0 and age <= grace:
        return START, None
    if spec.catchup == "none":
        return MISS, R_NONE
    if window is not None and age > window:
        return MISS, R_WINDOW
    if spec.catchup == "latest":  # only the newest fire runs; an on-time one supersedes the rest
        return (START, CATCH_UP) if rank == 0 else (MISS, R_SUPERSEDED)
    missed_rank = rank - (1 if on_time_newest else 0)
    return (START, CATCH_UP) if missed_rank < spec.max_catchup else (MISS, R_MAX)


def plan_fires(spec, last_fire, since, now, *, grace=ON_TIME_GRACE, list_limit=LIST_LIMIT, paused=False):
    """Decisions for the fire times in (last_fire, now] at or after `since`, oldest first.

    `last_fire` (or None) is the newest nominal fire already recorded; `since`
    is when this version of the schedule became active; all aware datetimes.
    `paused`: every fire is a miss "paused".
    """
    now, since = now.astimezone(UTC), since.astimezone(UTC)
    floor = since - timedelta(microseconds=1)  # exclusive lower bound: f >= since
    if last_fire is not None and last_fire.astimezone(UTC) >= since:
        floor = last_fire.astimezone(UTC)
    if floor >= now:
        return []
    window = spec.catchup_window
    limit = list_limit
    if spec.enabled and not paused and spec.catchup == "all":
        limit = max(limit, spec.max_catchup + 1)

    newest = previous_fires(spec, None, now, limit + 1, after=floor)  # ascending
    truncated = len(newest) > limit
    listed = newest[1:] if truncated else newest
    if not listed:
        return []
    on_time_newest = spec.enabled and not paused and (now - listed[-1]).total_seconds() <= grace

    plan = []
    count = len(listed)
    for index, nominal in enumerate(listed):
        rank = count - 1 - index
        action, reason = _decide(spec, rank, (now - nominal).total_seconds(), on_time_newest, grace, window, paused)
        plan.append(Fire(nominal, action, reason))

    if truncated:
        plan[:0] = _summaries(spec, floor, listed[0], now, window, paused)
    return plan


def _summaries(spec, floor, first_listed, now, window, paused=False):
    """Summary entries for the unlisted fires in (floor, first_listed): all missed.

    Their rank is beyond every start, so the reason depends only on their age:
    one reason, or two split at the catch-up window's edge.
    """
    older = R_PAUSED if paused else _older_reason(spec)
    bounds = [(floor, first_listed - timedelta(microseconds=1), older)]
    if spec.enabled and not paused and spec.catchup != "none" and window is not None:
        edge = now - timedelta(seconds=window)  # fires <= edge - 1µs are outside
        edge_excl = edge - timedelta(microseconds=1)
        if edge_excl > floor:
            bounds = [
                (floor, min(edge_excl, first_listed - timedelta(microseconds=1)), R_WINDOW),
                (edge_excl, first_listed - timedelta(microseconds=1), older),
            ]
    out = []
    for low, high, reason in bounds:
        if high <= low:
            continue
        first = next(iter_fires(spec.cron, spec.timezone, low), None)
        if first is None or first > high:
            continue
        last = previous_fires(spec, None, high, 1, after=low)
        out.append(Fire(first, MISS, reason, through=last[-1] if last else first))
    return out


def _older_reason(spec):
    if not spec.enabled:
        return R_DISABLED
    if spec.catchup == "none":
        return R_NONE
    if spec.catchup == "latest":
        return R_SUPERSEDED
    return R_MAX


# ------------------------------------------------------------------- overlap

SKIP, BUFFER, CANCEL_THEN_START = "skip", "buffer", "cancel_then_start"

OVERLAP_SKIP_REASON = {
    "skip": "overlap=skip: a run of this schedule is still active",
    "buffer_one": "overlap=buffer_one: buffer full",
}


def overlap_decision(policy, active_runs, buffered):
    """What to do with a fire that is due, as in Temporal's overlap policies.

    Returns "start", "skip", "buffer" or "cancel_then_start":
    - nothing active and nothing buffered: "start" (every policy);
    - "skip": "skip" while a run is active;
    - "buffer_one": "buffer" if the buffer is empty, else "skip" (buffer full:
      the later fire is dropped, the one already buffered is kept);
    - "buffer_all": "buffer" while a run is active or fires wait in the
      buffer (they run one after another, in order);
    - "allow": "start" (runs concurrently);
    - "cancel_other": "cancel_then_start" while a run is active.
    The daemon drains the buffer (oldest first) when the active run ends;
    asking with buffered > 0 and nothing active keeps the order: new fires
    queue behind the buffered ones.
    """
    if policy not in ("skip", "buffer_one", "buffer_all", "allow", "cancel_other"):
        raise ValueError(f"unknown overlap policy {policy!r}")
    if active_runs < 0 or buffered < 0:
        raise ValueError("active_runs and buffered must not be negative")
    if policy == "buffer_one":
        if active_runs == 0 and buffered == 0:
            return START
        return BUFFER if buffered == 0 else SKIP
    if policy == "buffer_all":
        return START if active_runs == 0 and buffered == 0 else BUFFER
    if active_runs == 0:
        return START
    return {"skip": SKIP, "allow": START, "cancel_other": CANCEL_THEN_START}[policy]


__all__ = [
    "Fire",
    "plan_fires",
    "overlap_decision",
    "ON_TIME_GRACE",
    "LIST_LIMIT",
    "OVERLAP_SKIP_REASON",
]
