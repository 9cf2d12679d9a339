"""What a user (or the HTTP API) does to one stored schedule: pause, resume, trigger, backfill.

Each works on the database alone: the schedule must have been loaded once by
`flowmetal schedule` (its row holds the spec and the hashes of its last good
sources, so a run started here pins the same code the scheduler would). A
running scheduler sees the change at its next look at the schedule: it reads
the row before each fire, and its embedded worker executes the runs created
here (as does any `flowmetal worker` on the database).

- pause: the row's `enabled` column is set to 0 (see `entry.is_paused`). The
  scheduler then records each fire time as missed, reason "paused"; buffered
  fires are dropped ("schedule paused"); runs already started go on. An edit of
  the file does not resume it. A schedule disabled in its file cannot be paused.
- resume: `enabled` back to 1 and `since` to now, as when a disabled schedule
  is enabled again: nothing is caught up for the paused time (backfill does that).
- trigger: a fire at now, reason "manual", started whatever the overlap policy
  and whether or not the schedule is paused; recorded like any fire, so `--list`
  counts it, its outcome is recorded and on_failure follows a failure.
- backfill: a fire for each fire time of the cron in [start, end), reason
  "backfill", all created at once (the worker's concurrency bounds how many run
  together); a time already started (or buffered) is left alone, a missed or
  skipped one is started. `end` may not be in the future (those fires are the
  scheduler's), and at most `BACKFILL_LIMIT` fire times are accepted at once.
"""

import json

from flowmetal.errors import UserError
from flowmetal.schedule.cron import iter_fires
from flowmetal.schedule.entry import dt, is_paused, iso_utc
from flowmetal.schedule.scheduler import Scheduler

R_MANUAL = "manual"
R_BACKFILL = "backfill"
R_PAUSED_DROP = "schedule paused"
BACKFILL_LIMIT = 10_000


def _row(store, name):
    row = store.get_schedule(name)
    if row is None:
        raise UserError(f"no schedule named {name!r} in this database (a schedule is known once "
                        f"`flowmetal schedule` has loaded its file; `flowmetal schedule --list` shows them)")
    if row["removed_at"] is not None:
        raise UserError(f"schedule {name!r} was removed from {row['file']} (its history is kept, "
                        f"but it no longer fires)")
    return row


def _declared_enabled(row):
    try:
        return bool(json.loads(row["spec"]).get("enabled", True))
    except (TypeError, ValueError, AttributeError):
        return True


def _state(row):
    return {"name": row["name"], "file": row["file"], "line": row["line"],
            "status": "paused" if is_paused(row) else ("active" if row["enabled"] else "disabled")}


def pause_schedule(store, name, now):
    """Pause a schedule. Returns {name, file, line, status, changed}."""
    with store.transaction():
        row = _row(store, name)
        if not _declared_enabled(row):
            raise UserError(f"schedule {name!r} is disabled in {row['file']}:{row['line']} (enabled = False); "
                            f"there is nothing to pause")
        if is_paused(row):
            return {**_state(row), "changed": False}
        store.update_schedule(name, enabled=0, updated_at=now)
        for fire in store.buffered_fires(name):
            store.update_fire(name, fire["nominal"], action="skipped", reason=R_PAUSED_DROP, recorded_at=now)
        return {**_state(store.get_schedule(name)), "changed": True}


def resume_schedule(store, name, now):
    """Resume a paused schedule (nothing is caught up for the paused time). Returns as pause_schedule."""
    with store.transaction():
        row = _row(store, name)
        if not is_paused(row):
            return {**_state(row), "changed": False}
        store.update_schedule(name, enabled=1, since=now, updated_at=now)
        return {**_state(store.get_schedule(name)), "changed": True}


def _entry(store, root, name, row):
    entry = Scheduler(store, root)._last_good(name, row)
    if entry is None:
        raise UserError(f"schedule {name!r}: its stored declaration cannot be read; "
                        f"let `flowmetal schedule` load its file again")
    return entry


def trigger_schedule(store, root, name, now):
    """Start a run of the schedule now, recorded as a manual fire.
    Returns {schedule, fire_time (ISO UTC), nominal, run_id}."""
    row = _row(store, name)
    scheduler = Scheduler(store, root)
    entry = _entry(store, root, name, row)
    nominal = now
    for _ in range(1000):  # a fire already recorded at this very instant: the next microsecond
        run_id, why = scheduler.start_manual(entry, nominal, R_MANUAL, now)
        if why != "a fire at that time is already recorded":
            break
        nominal += 1e-6
    if run_id is None:
        raise UserError(f"schedule {name!r}: no run was started: {why}")
    return {"schedule": name, "fire_time": iso_utc(nominal), "nominal": nominal, "run_id": run_id}


def backfill_fire_times(spec, start, end, limit=BACKFILL_LIMIT):
    """The cron's fire times in [start, end) (epoch seconds); UserError beyond `limit`."""
    out = []
    for moment in iter_fires(spec.cron, spec.timezone, dt(start - 1e-6)):
        ts = moment.timestamp()
        if ts >= end:
            break
        if len(out) >= limit:
            raise UserError(f"more than {limit} fire times between {iso_utc(start)} and {iso_utc(end)}; "
                            f"backfill a shorter range at a time")
        out.append(ts)
    return out


def backfill_schedule(store, root, name, start, end, now, dry_run=False):
    """Start a run for each fire time of the schedule in [start, end), recorded as fires.

    Returns one {fire_time, nominal, action, run_id, reason} per fire time, oldest
    first; action is "started", "left" (already recorded: reason says how), "skipped"
    (no run could be created: reason says why) or, with dry_run, "would start".
    """
    if end <= start:
        raise UserError("--to must be later than --from")
    if end > now:
        raise UserError(f"--to {iso_utc(end)} is in the future: backfill covers fire times that have passed "
                        f"(later ones are the scheduler's)")
    row = _row(store, name)
    entry = _entry(store, root, name, row)
    times = backfill_fire_times(entry.spec, start, end)
    recorded = {f["nominal"]: f for f in store.fires(name, limit=1_000_000) if start <= f["nominal"] < end}
    scheduler = Scheduler(store, root)
    out = []
    for nominal in times:
        existing = recorded.get(nominal)
        item = {"fire_time": iso_utc(nominal), "nominal": nominal, "run_id": None, "reason": None}
        if existing is not None and existing["action"] not in ("missed", "skipped"):
            out.append({**item, "action": "left", "run_id": existing["run_id"],
                        "reason": f"already {existing['action']}"})
            continue
        if dry_run:
            was = f"was {existing['action']}: {existing['reason']}" if existing else None
            out.append({**item, "action": "would start", "reason": was})
            continue
        run_id, why = scheduler.start_manual(entry, nominal, R_BACKFILL, now, existing=existing)
        if why == "a fire at that time is already recorded":  # recorded since we looked (a summary moved)
            existing = next((f for f in store.fires(name, limit=1_000_000) if f["nominal"] == nominal), None)
            if existing is not None and existing["action"] in ("missed", "skipped"):
                run_id, why = scheduler.start_manual(entry, nominal, R_BACKFILL, now, existing=existing)
            elif existing is not None:
                out.append({**item, "action": "left", "run_id": existing["run_id"],
                            "reason": f"already {existing['action']}"})
                continue
        out.append({**item, "action": "started" if run_id else "skipped", "run_id": run_id, "reason": why})
    return out
