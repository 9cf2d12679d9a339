"""What `flowmetal schedule --list` and `--dry-run` show: read-only views, no writes."""

import json

from flowmetal.schedule.cron import iter_fires, next_fires, stable_jitter
from flowmetal.schedule.entry import dt, is_paused, iso_local, iso_utc
from flowmetal.schedule.spec import ScheduleSpec



def preview(specs, start, end, limit=100_000):
    """What would fire in [start, end) (epoch seconds), without touching anything:
    [{schedule, fire_time (UTC), local_time, start_at (with jitter), target}], by time."""
    out = []
    for spec in specs:
        if not spec.enabled:
            continue
        n = 0
        for moment in iter_fires(spec.cron, spec.timezone, dt(start - 1e-6)):
            ts = moment.timestamp()
            if ts >= end or n >= limit:
                break
            n += 1
            out.append({"schedule": spec.name, "fire_time": iso_utc(ts), "local_time": iso_local(ts, spec.timezone),
                        "start_at": iso_utc(ts + stable_jitter(spec.name, moment, spec.jitter)),
                        "target": spec.run, "timestamp": ts})
    out.sort(key=lambda r: (r["timestamp"], r["schedule"]))
    for r in out:
        del r["timestamp"]
    return out


def listing(store, specs, now, count=3, recent=10, scope=None):
    """One dict per schedule (declared in `specs`, or stored for a file `scope(file)`
    accepts: default every file): its settings, status (new, active, paused, disabled,
    not loaded, removed), next `count` fire times, last fire and its outcome, how many
    fires were started, skipped, missed or are buffered, and its `recent` newest fire records."""
    rows = {r["name"]: r for r in store.schedules()}
    declared_names = {s.name for s in specs}
    rows = {n: r for n, r in rows.items() if n in declared_names or scope is None or scope(r["file"])}
    counts = store.fire_counts()
    declared = {s.name: s for s in specs}
    out = []
    for name in sorted(set(declared) | set(rows)):
        row = rows.get(name)
        spec = declared.get(name)
        if spec is None:
            try:
                spec = ScheduleSpec(**json.loads(row["spec"]))
            except (TypeError, ValueError):
                continue
        if row is None:
            status = "new" if spec.enabled else "disabled"
        elif row["removed_at"] is not None:
            status = "removed"
        elif name not in declared:
            status = "not loaded"
        else:
            status = "active" if spec.enabled else "disabled"
        if is_paused(row):
            status = "paused"
        nxt = []
        if status in ("active", "new", "not loaded") and spec.enabled:
            after = now
            if row is not None and row["last_fire"] is not None:
                after = max(after, row["last_fire"])
            nxt = [iso_local(m.timestamp(), spec.timezone) for m in next_fires(spec, after=dt(after), count=count)]
        history = []
        for f in store.fires(name, limit=recent) if row is not None else []:
            state = f["run_state"]
            if f["run_id"] and state is None:
                run = store.get_run(f["run_id"])
                state = run["state"] if run else None
            history.append({"fire_time": iso_local(f["nominal"], spec.timezone),
                            "through": None if f["through"] is None else iso_local(f["through"], spec.timezone),
                            "action": f["action"], "reason": f["reason"], "run_id": f["run_id"], "state": state,
                            "on_failure_run": f["followup_run"]})
        last = None
        if history:
            h = history[0]
            last = {"fire_time": h["through"] or h["fire_time"],
                    **{k: h[k] for k in ("action", "reason", "run_id", "state")}}
        c = counts.get(name, {})
        out.append({
            "name": name, "status": status, "cron": spec.cron, "timezone": spec.timezone, "enabled": spec.enabled,
            "run": spec.run, "file": spec.file, "line": spec.line, "catchup": spec.catchup,
            "overlap": spec.overlap, "next": nxt, "last_fire": last,
            "since": None if row is None else iso_utc(row["since"]),
            "counts": {k: c.get(k, 0) for k in ("started", "skipped", "missed", "buffered")},
            "recent": history,
        })
    return out
