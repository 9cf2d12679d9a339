"""`flowmetal schedule`: the daemon that fires schedules and executes their runs.

Three parts, from pure-ish to effectful:

- `Scheduler`: the store-backed core. `reconcile(specs, now)` makes the
  `schedules` table agree with what the files declare; `tick(now)` fires what
  is due at `now`. Time is passed in: nothing here reads the wall clock or
  sleeps, so tests run months of schedule time in seconds. It only *creates*
  runs (huey: the scheduler only enqueues); a `Worker` executes them.
- `Workspace`: the `.star` files under some paths, loaded with
  `flowmetal.lang.check.check` (a file with any error keeps its last good
  schedules), and a cheap signature of their mtimes to notice edits.
- `Daemon`: the loop the CLI runs — reload on change and on SIGHUP, tick with
  the real clock, an embedded Worker, and a graceful stop on SIGTERM/SIGINT.

Guarantees and how they are kept:

- A fire happens once. Every decision about a nominal fire time is a row in
  `fires`, UNIQUE (schedule, nominal), and a started fire's run is created in
  the same transaction as its row; only the process whose INSERT inserted the
  row creates the run. Each tick's work happens under BEGIN IMMEDIATE after
  re-reading the schedule's persisted `last_fire`, so a second scheduler on the
  same database (or this one after a crash between any two statements) plans
  nothing twice (DBOS: deterministic ids for scheduled fires).
- Missed fires come from the persisted `last_fire`, `since` and the clock via
  `planner.plan_fires`; every start, skip, miss and buffered fire is a row with
  its reason. An in-memory heap of next due times only says *when to look*:
  it is rebuilt on reconcile (reusing the due time of unchanged schedules),
  never trusted for *what* to fire.
- `since` is set when a schedule is added, edited (new fingerprint: cron,
  time zone, enabled), or re-added after removal: no fire before it is started.

Decisions where SPEC section 5 is silent:

- Removed schedules (no longer declared by any file under the daemon's
  paths) are kept with `enabled = 0` and `removed_at`; their fire history
  stays. Rows of files outside the daemon's paths are left alone, so two
  daemons may serve different directories of one database.
- Jitter: a started fire's run is created at nominal + `stable_jitter`; the
  on-time grace of the planner is widened by the schedule's jitter. A jitter
  larger than the interval between fires makes a later fire supersede an
  earlier one (as the catch-up policy says).
- Overlap: "active" means a run of the schedule that has not ended (pending,
  running or waiting; a continue_as_new chain stays active). Catch-up starts
  are subject to the overlap policy like any other. Buffered fires are rows
  with action "buffered"; when no run of the schedule is active the oldest
  is started (buffer_all drains them one after another). `cancel_other`
  cancels the active runs; pending and waiting ones end at once and the new
  run starts in the same transaction, a running one is asked to stop and the
  new fire waits in the buffer until it has (Temporal waits too); a later
  fire supersedes a fire still waiting that way.
- on_failure: when a started fire's run (following continue_as_new to the
  last run) ends `failed` or `timed_out`, a run of the on_failure function
  is created with keyword arguments run_id (the run that failed), schedule,
  fire_time (ISO 8601 UTC, "2026-01-01T02:00:00Z"), state and error (the
  run's error text). The fire row's run_state is set in the same transaction
  (only if still unset), so the follow-up is started once.
- A file that fails to load (or has any error `flowmetal check` reports)
  keeps its last good schedules: those in memory, or after a restart those
  stored in the database with the hashes of their source texts.
"""

import heapq
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from flowmetal.clock import SYSTEM
from flowmetal.codec import canonical
from flowmetal.engine import runs as run_ops
from flowmetal.errors import FlowmetalError, UserError
from flowmetal.schedule.cron import iter_fires, next_fires, resolve_timezone, stable_jitter
from flowmetal.schedule.planner import (
    BUFFER, CANCEL_THEN_START, MISS, ON_TIME_GRACE, OVERLAP_SKIP_REASON, SKIP, overlap_decision, plan_fires,
)
from flowmetal.schedule.spec import ScheduleSpec
from flowmetal.store.base import ENDED

UTC = timezone.utc
CHUNK = 10  # due schedules handled per transaction (short transactions: workers write too)
FAILURE_STATES = ("failed", "timed_out")
R_SUPERSEDED = "superseded by a later fire"


# ------------------------------------------------------------------ helpers


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


def _dt(ts):
    return datetime.fromtimestamp(ts, UTC)


class FixedClock:
    """The clock that runs and cancellations created by one tick see: that tick's `now`."""

    def __init__(self, now):
        self._now = now

    def now(self):
        return self._now


def split_target(ref):
    """"jobs/x.star:fn" (or "//jobs/x.star:fn") -> ("jobs/x.star", "fn")."""
    label, _, function = ref.rpartition(":")
    return (label[2:] if label.startswith("//") else label), function


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
        found = next_fires(spec, after=_dt(floor))
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


# --------------------------------------------------------------- scheduler


class Scheduler:
    """Fires schedules into runs. `emit(kind, **fields)` receives one event per
    decision (fire, skip, miss, buffer, cancel, on_failure, added, changed,
    removed, error), always after the transaction that recorded it committed."""

    def __init__(self, store, root, emit=None):
        self.store = store
        self.root = str(root)
        self.emit = emit or (lambda kind, **fields: None)
        self.entries = {}  # name -> Entry
        self._heap = []  # (due, name)
        self._due = {}  # name -> due time in the heap (entries with another time are stale)
        self._cursor = {}  # name -> (key, due): what `due` was computed from (see _key)
        self._next = NextFires()

    # --- reconcile -----------------------------------------------------------

    def reconcile(self, specs, now, *, texts=None, scope=None, keep_files=()):
        """Make the schedules table agree with `specs` (ScheduleSpecs) at time `now`.

        texts: {schedule name: {file: text}} to pin into its runs (else loaded
        from disk at the first fire). scope(file) -> bool: which stored rows
        this scheduler may remove (default: all). keep_files: files that failed
        to load; their schedules stay as they were (last good version).
        Returns {"added": [...], "changed": [...], "removed": [...]}.
        """
        texts = texts or {}
        keep_files = set(keep_files)
        store = self.store
        changes = {"added": [], "changed": [], "removed": []}
        entries, hashed = {}, {}
        with store.transaction():
            rows = {r["name"]: r for r in store.schedules()}
            for spec in specs:
                if spec.name in entries:
                    continue
                old = self.entries.get(spec.name)
                if old is not None and old.spec == spec and texts.get(spec.name) in (None, old.texts):
                    entry = old  # unchanged: keep its fingerprint, texts and hashes
                else:
                    entry = Entry(spec, texts.get(spec.name))
                if entry.texts is not None and entry.hashes is None:
                    if id(entry.texts) not in hashed:  # schedules of one file share one texts dict
                        hashed[id(entry.texts)] = store.put_sources(entry.texts)
                    entry.hashes = hashed[id(entry.texts)]
                entries[spec.name] = entry
                self._store_spec(entry, rows.get(spec.name), now, changes)
            for name, row in rows.items():
                if name in entries or row["removed_at"] is not None:
                    continue
                if row["file"] in keep_files:
                    kept = self._last_good(name, row)
                    if kept is not None:
                        entries[name] = kept
                    continue
                if scope is not None and not scope(row["file"]):
                    continue
                store.update_schedule(name, enabled=0, removed_at=now, updated_at=now)
                self._drop_buffered(name, "schedule removed", now)
                changes["removed"].append(name)
        self.entries = entries
        self._rebuild_heap(now)
        for kind in ("added", "changed", "removed"):
            for name in changes[kind]:
                entry = entries.get(name)
                spec = entry.spec if entry else None
                nxt = self._due.get(name) if spec and spec.enabled else None
                self.emit(kind, schedule=name, cron=spec.cron if spec else None,
                          timezone=spec.timezone if spec else "UTC", enabled=bool(spec and spec.enabled),
                          next=nxt)
        return changes

    def _store_spec(self, entry, row, now, changes):
        spec, store = entry.spec, self.store
        spec_json = canonical(spec.to_dict())
        hashes = canonical(entry.hashes) if entry.hashes is not None else (row or {}).get("sources")
        if row is None:
            store.insert_schedule({
                "name": spec.name, "spec": spec_json, "fingerprint": entry.fingerprint, "since": now,
                "enabled": int(spec.enabled), "last_fire": None, "file": spec.file, "line": spec.line,
                "sources": hashes, "removed_at": None, "updated_at": now,
            })
            changes["added"].append(spec.name)
        elif row["fingerprint"] != entry.fingerprint or row["removed_at"] is not None:
            store.update_schedule(spec.name, spec=spec_json, fingerprint=entry.fingerprint, since=now,
                                  enabled=int(spec.enabled), file=spec.file, line=spec.line, sources=hashes,
                                  removed_at=None, updated_at=now)
            changes["changed"].append(spec.name)
            if not spec.enabled:
                self._drop_buffered(spec.name, "schedule disabled", now)
        elif (row["spec"], row["file"], row["line"], row["sources"]) != (spec_json, spec.file, spec.line, hashes):
            store.update_schedule(spec.name, spec=spec_json, file=spec.file, line=spec.line, sources=hashes,
                                  updated_at=now)

    def _last_good(self, name, row):
        """The schedule as it was before its file broke: in memory, else from the database."""
        if name in self.entries:
            return self.entries[name]
        try:
            spec = ScheduleSpec(**json.loads(row["spec"]))
            hashes = json.loads(row["sources"]) if row["sources"] else None
            texts = self.store.get_sources(hashes) if hashes else None
        except (TypeError, ValueError, FlowmetalError):
            return None
        entry = Entry(spec, texts)
        entry.hashes = hashes
        return entry

    def _drop_buffered(self, name, reason, now):
        for fire in self.store.buffered_fires(name):
            self.store.update_fire(name, fire["nominal"], action="skipped", reason=reason, recorded_at=now)

    # --- the heap of due times --------------------------------------------------

    def _rebuild_heap(self, now):
        rows = {r["name"]: r for r in self.store.schedules()}
        self._heap, self._due = [], {}
        cursor = {}
        for name, entry in self.entries.items():
            row = rows.get(name)
            if row is None:
                continue
            key = self._key(entry, row["since"], row["last_fire"])
            old = self._cursor.get(name)
            due = old[1] if old is not None and old[0] == key else self._compute_due(entry, row)
            cursor[name] = (key, due)
            if due is not None:
                self._due[name] = due
                self._heap.append((due, name))
        heapq.heapify(self._heap)
        self._cursor = cursor

    def _compute_due(self, entry, row, deferred=None):
        """When to look at this schedule next: its next fire (+ jitter), from the persisted state."""
        if deferred is not None:
            return deferred
        spec, since, last = entry.spec, row["since"], row["last_fire"]
        floor = last if last is not None and last >= since else since - 1e-6
        nominal = self._next.after(spec, floor)
        if nominal is None:
            return None
        jitter = stable_jitter(spec.name, _dt(nominal), spec.jitter) if spec.enabled and spec.jitter else 0.0
        return nominal + jitter

    @staticmethod
    def _key(entry, since, last_fire):
        """What a schedule's due time is computed from."""
        return (entry.fingerprint, entry.spec.jitter, since, last_fire)

    def _push(self, name, due, key):
        self._cursor[name] = (key, due)
        if due is None:
            self._due.pop(name, None)
            return
        self._due[name] = due
        heapq.heappush(self._heap, (due, name))

    def next_due(self):
        """The earliest time at which `tick` has something to fire (None: nothing ever)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _pop_due(self, now):
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, name = heapq.heappop(self._heap)
            if self._due.get(name) == at:
                del self._due[name]
                due.append(name)
        return due

    # --- tick ------------------------------------------------------------------

    def tick(self, now, fire=True):
        """Fire what is due at `now` (epoch seconds), start buffered fires whose
        active run ended, record the outcome of ended runs and start on_failure
        runs. With fire=False only the last two. Returns the ids of the runs created."""
        created = []
        if fire:
            names = self._pop_due(now)
            for i in range(0, len(names), CHUNK):
                chunk = names[i:i + CHUNK]
                events, before = [], len(created)
                try:
                    with self.store.transaction():
                        for name in chunk:
                            self._fire(name, now, events, created)
                except Exception as e:  # a locked database: look again in a second
                    del created[before:]
                    for name in chunk:
                        self._push(name, now + 1.0, None)
                    self.emit("error", message=f"firing {', '.join(chunk[:3])}: {e}")
                    continue
                self._flush(events)
        self._followups(now, created)
        return created

    def _flush(self, events):
        for kind, fields in events:
            self.emit(kind, **fields)

    def _fire(self, name, now, events, created):
        entry = self.entries.get(name)
        row = self.store.get_schedule(name)
        if entry is None or row is None or row["removed_at"] is not None:
            return
        spec, store = entry.spec, self.store
        since, last = row["since"], row["last_fire"]
        plan = plan_fires(spec, None if last is None else _dt(last), _dt(since), _dt(now),
                          grace=ON_TIME_GRACE + (spec.jitter or 0.0))
        new_last, deferred = last, None
        for f in plan:
            nominal = f.nominal.timestamp()
            if f.action == MISS:
                end = (f.through or f.nominal).timestamp()
                if store.insert_fire({"schedule": name, "nominal": nominal, "action": "missed", "reason": f.reason,
                                      "recorded_at": now, "through": None if f.through is None else end}):
                    events.append(("miss", {"schedule": name, "fire_time": nominal, "timezone": spec.timezone,
                                            "through": None if f.through is None else end, "reason": f.reason}))
                new_last = end if new_last is None else max(new_last, end)
                continue
            start_at = nominal + stable_jitter(name, f.nominal, spec.jitter)
            if start_at > now:  # jitter: not yet; this fire and any later wait
                deferred = start_at
                break
            new_last = nominal if new_last is None else max(new_last, nominal)
            self._start_fire(entry, nominal, start_at, f.reason, now, events, created)
        if new_last != last:
            store.update_schedule(name, last_fire=new_last)
        due = self._compute_due(entry, dict(row, last_fire=new_last), deferred)
        if due is not None and due <= now and not plan:  # never spin on a time the planner disagrees with
            due = now + 0.5
        self._push(name, due, self._key(entry, since, new_last))

    def _start_fire(self, entry, nominal, start_at, reason, now, events, created):
        """Decide about one fire the plan says to start (overlap), record it, create its run."""
        spec, store, name = entry.spec, self.store, entry.spec.name
        policy = spec.overlap
        active = [] if policy == "allow" else store.active_schedule_runs(name)
        buffered = 0 if policy == "allow" else len(store.buffered_fires(name))
        decision = overlap_decision(policy, len(active), buffered)
        base = {"schedule": name, "fire_time": nominal, "timezone": spec.timezone}
        fire = {"schedule": name, "nominal": nominal, "recorded_at": now, "start_at": start_at}
        if decision == SKIP:
            if store.insert_fire({**fire, "action": "skipped", "reason": OVERLAP_SKIP_REASON[policy]}):
                events.append(("skip", {**base, "reason": OVERLAP_SKIP_REASON[policy]}))
            return
        if decision == BUFFER:
            why = f"overlap={policy}: waiting for run {active[0]['id']} to end" if active \
                else f"overlap={policy}: queued behind {buffered} buffered fire(s)"
            if store.insert_fire({**fire, "action": "buffered", "reason": why}):
                events.append(("buffer", {**base, "reason": why}))
            return
        if decision == CANCEL_THEN_START:
            if not store.insert_fire({**fire, "action": "buffered", "reason": "overlap=cancel_other"}):
                return
            self._cancel_active(entry, active, now, events)
            still = store.active_schedule_runs(name)
            if still:
                why = f"overlap=cancel_other: waiting for cancelled run {still[0]['id']} to stop"
                store.update_fire(name, nominal, reason=why)
                self._supersede_buffered(name, nominal, now)
                events.append(("buffer", {**base, "reason": why}))
                return
            self._supersede_buffered(name, nominal, now)
            reason = "overlap=cancel_other" if reason is None else f"{reason}; overlap=cancel_other"
            self._create(entry, nominal, reason, now, events, created)
            return
        if not store.insert_fire({**fire, "action": "started", "reason": reason}):
            return  # another scheduler handled this fire
        self._create(entry, nominal, reason, now, events, created)

    def _cancel_active(self, entry, active, now, events):
        for run in active:
            if run["cancel_requested"]:
                continue
            try:
                run_ops.cancel_run(self.store, FixedClock(now), run["id"])
            except UserError:
                continue  # it ended meanwhile
            events.append(("cancel", {"schedule": entry.spec.name, "run_id": run["id"],
                                      "reason": "overlap=cancel_other"}))

    def _supersede_buffered(self, name, nominal, now):
        for fire in self.store.buffered_fires(name):
            if fire["nominal"] < nominal:
                self.store.update_fire(name, fire["nominal"], action="skipped", reason=R_SUPERSEDED, recorded_at=now)

    def _create(self, entry, nominal, reason, now, events, created):
        """Create the run of a fire whose row exists (in the caller's transaction)."""
        spec, name = entry.spec, entry.spec.name
        texts = self._texts(entry)
        file, function = split_target(spec.run)
        if isinstance(texts, str):  # the file cannot be loaded: record why nothing ran
            self.store.update_fire(name, nominal, action="skipped", reason=texts, recorded_at=now)
            events.append(("skip", {"schedule": name, "fire_time": nominal, "timezone": spec.timezone,
                                    "reason": texts}))
            return None
        run_id = run_ops.create_run(
            self.store, FixedClock(now), file=file, function=function, args=spec.args, texts=texts,
            root_dir=self.root, timeout=spec.timeout, schedule=name, fire_time=nominal,
        )
        self.store.update_fire(name, nominal, action="started", reason=reason, run_id=run_id, recorded_at=now)
        created.append(run_id)
        events.append(("fire", {"schedule": name, "fire_time": nominal, "timezone": spec.timezone,
                                "run_id": run_id, "reason": reason, "created_at": now}))
        return run_id

    def _texts(self, entry):
        """The texts a run of this schedule pins, or (a string) why they cannot be had."""
        if entry.texts is None:
            from flowmetal.lang.loader import Program
            from flowmetal.lang.workspace import DiskSources

            program = Program(DiskSources(self.root))
            try:
                program.load(entry.spec.file)
            except UserError as e:
                first = e.diagnostics[0].render().splitlines()[0] if getattr(e, "diagnostics", None) else str(e)
                return f"cannot load {entry.spec.file}: {first}"
            finally:
                program.close()
            entry.texts = dict(program.texts)
        return entry.texts

    # --- follow-ups: buffered fires, outcomes, on_failure -----------------------

    def _followups(self, now, created):
        for name in self.store.schedules_with_buffered():
            entry = self.entries.get(name)
            if entry is None:
                continue
            events = []
            with self.store.transaction():
                if self.store.active_schedule_runs(name):
                    continue
                waiting = self.store.buffered_fires(name)
                if not waiting:
                    continue
                if entry.spec.overlap == "cancel_other":
                    self._supersede_buffered(name, waiting[-1]["nominal"], now)
                    fire = waiting[-1]
                else:
                    fire = waiting[0]
                reason = (fire["reason"] or "buffered") + "; started when the active run ended"
                self._create(entry, fire["nominal"], reason, now, events, created)
            self._flush(events)
        for row in self.store.ended_fires():
            self._outcome(row, now, created)

    def _outcome(self, row, now, created):
        name = row["schedule"]
        tip = dict(row, id=row["run_id"])
        seen = 0
        while tip.get("continued_as") and seen < 10_000:  # continue_as_new: the chain's last run decides
            nxt = self.store.get_run(tip["continued_as"])
            if nxt is None:
                break
            tip, seen = nxt, seen + 1
        if tip["state"] not in ENDED:
            return
        entry = self.entries.get(name)
        if entry is None:
            stored = self.store.get_schedule(name)
            if stored is not None and stored["removed_at"] is None:
                return  # served by another scheduler: its on_failure is its business
        events = []
        with self.store.transaction():
            if not self.store.update_fire(name, row["nominal"], only_open=True, run_state=tip["state"]):
                return  # another scheduler recorded it first
            failed = tip["state"] in FAILURE_STATES
            if failed and entry is not None and entry.spec.on_failure:
                follow, problem = self._on_failure(entry, row["nominal"], tip, now)
                if follow is not None:
                    self.store.update_fire(name, row["nominal"], followup_run=follow)
                    created.append(follow)
                events.append(("on_failure", {"schedule": name, "fire_time": row["nominal"],
                                              "timezone": entry.spec.timezone, "run_id": tip["id"],
                                              "state": tip["state"], "followup": follow, "reason": problem}))
        self._flush(events)

    def _on_failure(self, entry, nominal, run, now):
        spec = entry.spec
        """(run id, None), or (None, why no on_failure run could be created)."""
        texts = self._texts(entry)
        if isinstance(texts, str):
            return None, texts
        file, function = split_target(spec.on_failure)
        args = {"run_id": run["id"], "schedule": spec.name, "fire_time": iso_utc(nominal),
                "state": run["state"], "error": run["error"]}
        return run_ops.create_run(self.store, FixedClock(now), file=file, function=function, args=args,
                                  texts=texts, root_dir=self.root), None


# ------------------------------------------------------------ views (no writes)


def preview(specs, start, end, limit=100_000):
    """What would fire in [start, end) (epoch seconds), without touching anything:
    [{schedule, fire_time (UTC), local_time, start_at (with jitter), target}], by time."""
    out = []
    for spec in specs:
        if not spec.enabled:
            continue
        n = 0
        for moment in iter_fires(spec.cron, spec.timezone, _dt(start - 1e-6)):
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


def listing(store, specs, now, count=3, recent=10):
    """One dict per schedule (declared in `specs` or stored): its settings, next
    `count` fire times, last fire and its outcome, how many fires were started,
    skipped, missed or are buffered, and its `recent` newest fire records."""
    rows = {r["name"]: r for r in store.schedules()}
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
        nxt = []
        if status in ("active", "new", "not loaded") and spec.enabled:
            after = now
            if row is not None and row["last_fire"] is not None:
                after = max(after, row["last_fire"])
            nxt = [iso_local(m.timestamp(), spec.timezone) for m in next_fires(spec, after=_dt(after), count=count)]
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


# ---------------------------------------------------------------- workspace


@dataclass
class Loaded:
    specs: list  # ScheduleSpecs of the files that load cleanly
    texts: dict  # schedule name -> {file: text} its runs pin
    broken: dict  # file -> [Diagnostic]: files with errors (they keep their last good schedules)
    deps: set  # every workspace file the good ones loaded


class Workspace:
    """The .star files under some paths (files or directories) of a workspace root."""

    def __init__(self, root, paths):
        from flowmetal.lang.workspace import file_name

        self.root = Path(root).resolve()
        self.paths = [str(p) for p in paths] or ["."]
        self.deps = set()
        self._exact, self._prefixes = set(), []
        for p in self.paths:
            path = Path(p)
            if path.is_dir():
                rel = file_name(self.root, path)
                self._prefixes.append("" if rel == "." else rel.rstrip("/") + "/")
            else:
                self._exact.add(file_name(self.root, path) if path.exists() else str(p))

    def in_scope(self, file):
        """Is a stored schedule's file one this workspace serves? (Else it is left alone.)"""
        return file in self._exact or any(file.startswith(p) for p in self._prefixes)

    def files(self):
        from flowmetal.lang.check import star_files

        return star_files(self.root, self.paths)

    def signature(self):
        """Names, mtimes and sizes of the files under the paths and the files they load."""
        try:
            names = set(self.files())
        except UserError as e:
            return ("error", str(e))
        sig = []
        for name in sorted(names | self.deps):
            if name.startswith("@"):
                continue
            try:
                st = os.stat(self.root / name)
                sig.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((name, None, None))
        return tuple(sig)

    def load(self):
        """Load and check every file (raises UserError when a path does not exist).

        `flowmetal check` evaluates the files once; each file's pinned texts are
        that file plus what it loads (found by parsing its load() statements).
        A file is broken when check reports an error in it or in a file it loads.
        """
        from flowmetal.lang.check import check

        report = check(self.root, self.paths)
        errors = [d for d in report.diagnostics if d.severity == "error"]
        files = self.files()
        sources = _Texts(self.root)
        by_file = {}
        for spec in report.schedules:
            by_file.setdefault(spec.file, []).append(spec)
        specs, texts, broken, deps = [], {}, {}, set()
        for name in files:
            closure = sources.closure(name)
            bad = [d for d in errors if d.file in closure or d.file == name]
            if bad or closure is None:
                broken[name] = bad or [_diagnostic(name, f"{name} cannot be read")]
                continue
            deps |= set(closure)
            pinned = {n: sources.texts[n] for n in closure}
            for spec in by_file.get(name, []):
                specs.append(spec)
                texts[spec.name] = pinned
        for file, found in by_file.items():  # declared in a loaded file that is not under the paths
            if file in texts or file in broken or file in files:
                continue
            closure = sources.closure(file)
            if closure is None or any(d.file in closure for d in errors):
                continue
            pinned = {n: sources.texts[n] for n in closure}
            for spec in found:
                specs.append(spec)
                texts[spec.name] = pinned
        return Loaded(specs, texts, broken, {d for d in deps if not d.startswith("@")})


def _diagnostic(file, message):
    from flowmetal.lang.diagnostics import Diagnostic

    return Diagnostic(file, 1, 1, message)


class _Texts:
    """Reads workspace files once and follows their load() statements."""

    def __init__(self, root):
        from flowmetal.lang.workspace import DiskSources

        self.disk = DiskSources(root)
        self.texts = {}
        self._closures = {}

    def read(self, name):
        if name not in self.texts:
            self.texts[name] = self.disk.read(name)
        return self.texts[name]

    def closure(self, name, _stack=()):
        """The file and every file it loads (transitively), or None if one cannot be read or parsed."""
        from flowmetal.lang.loader import parse
        from flowmetal.lang.workspace import resolve_label

        if name in self._closures:
            return self._closures[name]
        if name in _stack:
            return {name}
        try:
            loads = [resolve_label(load.module_id, name) for load in parse(name, self.read(name)).loads()]
        except Exception:  # unreadable, unparsable, bad label: check reports it
            self._closures[name] = None
            return None
        out = {name}
        for dep in loads:
            sub = self.closure(dep, (*_stack, name))
            if sub is None:
                self._closures[name] = None
                return None
            out |= sub
        self._closures[name] = out
        return out


# ------------------------------------------------------------------- daemon

HARD_STOP = 2.5  # of the grace period, kept for interrupting what did not finish (sh needs 2 s to kill)
FOLLOWUP_SECONDS = 0.5  # at least this often: buffered fires, outcomes, on_failure


class Daemon:
    """The loop behind `flowmetal schedule`: load, reconcile, tick, execute, reload, stop."""

    def __init__(self, store, root, paths, *, concurrency=4, grace=10.0, emit=None, clock=SYSTEM, poll=1.0):
        self.store, self.clock = store, clock
        self.emit = emit or (lambda kind, **fields: None)
        self.workspace = Workspace(root, paths)
        self.scheduler = Scheduler(store, self.workspace.root, emit=self.emit)
        self.concurrency, self.grace, self.poll = concurrency, grace, poll
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self.reload_requested = threading.Event()
        self.wake = threading.Event()
        self.signature = None
        self._reported = {}  # file -> (its signature entry, rendered errors) last logged
        self.worker = None
        self.interrupted = set()  # runs this process stopped part way (resumable)

    # --- loading ---------------------------------------------------------------

    def reload(self, now=None):
        """Load the files and reconcile, here and now. Files with errors keep their last good schedules."""
        before = self.workspace.signature()
        return self._apply(self.workspace.load(), before, now)

    def _apply(self, loaded, before, now=None):
        """Reconcile what a load found; `before` is the signature the load started from."""
        now = self.clock.now() if now is None else now
        self.workspace.deps = loaded.deps
        after = self.workspace.signature()
        # A file that changed while it was being loaded must be loaded again: keep the old signature.
        unchanged = isinstance(before, tuple) and all(isinstance(e, tuple) for e in before) and \
            set(before) <= set(after) and {e[0] for e in set(after) - set(before)} <= loaded.deps
        self.signature = after if unchanged else before
        self._report(loaded)
        return self.scheduler.reconcile(loaded.specs, now, texts=loaded.texts, scope=self.workspace.in_scope,
                                        keep_files=loaded.broken)

    def _start_reload(self):
        """Load in a thread (a big workspace takes seconds to check); the loop keeps firing meanwhile."""
        box = {"before": self.workspace.signature()}

        def load():
            try:
                box["loaded"] = self.workspace.load()
            except Exception as e:  # reported by _finish_reload; the daemon keeps what it has
                box["error"] = e

        box["thread"] = threading.Thread(target=load, name="flowmetal-schedule-load", daemon=True)
        box["thread"].start()
        return box

    def _finish_reload(self, box):
        if "loaded" in box:
            try:
                self._apply(box["loaded"], box["before"])
            except FlowmetalError as e:
                self.emit("error", message=f"reconciling schedules: {e}")
            return
        e = box.get("error")
        self.signature = box["before"]
        if isinstance(e, FlowmetalError):  # e.g. a path that vanished
            self.emit("load_error", file=None, message=str(e), kept=sorted(self.scheduler.entries))
        else:
            self.emit("error", message=f"loading schedules: {e!r}")

    def _report(self, loaded):
        sig = {entry[0]: entry for entry in self.signature if isinstance(entry, tuple)}
        reported = {}
        for file, diagnostics in sorted(loaded.broken.items()):
            text = "\n".join(d.render() for d in diagnostics) or f"{file}: failed to load"
            key = (sig.get(file), text)
            reported[file] = key
            if self._reported.get(file) != key:
                kept = sorted(n for n, e in self.scheduler.entries.items() if e.spec.file == file)
                self.emit("load_error", file=file, message=text, kept=kept)
        for file in self._reported:
            if file not in reported:
                self.emit("load_ok", file=file)
        self._reported = reported

    # --- running ---------------------------------------------------------------

    def request_stop(self, *_):
        if self.stopping.is_set():  # a second SIGTERM/SIGINT: do not wait for effects any longer
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    def request_reload(self, *_):
        self.reload_requested.set()
        self.wake.set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            old[sig] = signal.signal(sig, handler)
        return old

    def _worker_event(self, kind, run, detail=None):
        name = run.get("schedule")
        entry = self.scheduler.entries.get(name) if name else None
        fields = {"schedule": name, "fire_time": run.get("fire_time"), "run_id": run["id"],
                  "target": f"{run['file']}:{run['function']}", "timezone": entry.spec.timezone if entry else "UTC"}
        if kind == "start":
            self.emit("start", **fields)
        elif kind == "end":
            if detail == "interrupted":
                self.interrupted.add(run["id"])
            began = run.get("started_at") or self.clock.now()
            self.emit("end", state=detail, duration=max(0.0, self.clock.now() - began), **fields)
        else:
            self.emit("error", message=f"run {run['id']}: {detail}")
        self.wake.set()

    def run(self, once=False):
        """Serve until SIGTERM/SIGINT (or, with once, until the runs fired now have ended).
        Returns the exit code."""
        from flowmetal.engine.worker import Worker

        old = self._install_signals()
        self.worker = worker = Worker(self.store, self.clock, concurrency=self.concurrency,
                                      on_event=self._worker_event)
        thread = threading.Thread(target=worker.run_forever, name="flowmetal-schedule-worker",
                                  kwargs={"until": self.stopping.is_set}, daemon=True)
        code = 0
        try:
            self.reload()
            self.emit("started", schedules=len(self.scheduler.entries), owner=worker.owner)
            thread.start()
            code = self._once(worker) if once else self._loop(worker)
        finally:
            self._shutdown(worker, thread)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return code

    def _loop(self, worker):
        last_poll = self.clock.now()
        loading = None
        while not self.stopping.is_set():
            now = self.clock.now()
            if loading is not None and not loading["thread"].is_alive():
                self._finish_reload(loading)
                loading = None
            if loading is None and (self.reload_requested.is_set() or now - last_poll >= self.poll):
                forced = self.reload_requested.is_set()
                self.reload_requested.clear()
                last_poll = now
                if forced or self.workspace.signature() != self.signature:
                    loading = self._start_reload()
            try:
                if self.scheduler.tick(self.clock.now()):
                    worker.wakeup.set()
            except FlowmetalError as e:
                self.emit("error", message=str(e))
            except Exception as e:  # a bug of ours must not stop every schedule: say so, keep going
                self.emit("error", message=f"internal error while ticking: {e!r}")
                self.wake.wait(1.0)
            now = self.clock.now()
            wait = min(self.poll - (now - last_poll), FOLLOWUP_SECONDS)
            due = self.scheduler.next_due()
            if due is not None:
                wait = min(wait, due - now)
            if loading is not None:
                wait = min(wait, 0.05)
            if wait > 0:
                self.wake.wait(wait)
            self.wake.clear()
        return 0

    def _once(self, worker):
        created = set(self.scheduler.tick(self.clock.now()))
        worker.wakeup.set()
        while created and not self.stopping.is_set():
            runs = [self.store.get_run(r) for r in created]
            if all(r is None or r["state"] in ENDED for r in runs):
                # the last outcomes may start on_failure runs or buffered fires
                more = set(self.scheduler.tick(self.clock.now(), fire=False)) - created
                if not more:
                    failed = [r for r in runs if r is not None and r["state"] != "completed"]
                    return 1 if failed else 0
                created |= more
                worker.wakeup.set()
                continue
            created |= set(self.scheduler.tick(self.clock.now(), fire=False))
            self.wake.wait(0.1)
            self.wake.clear()
        return 0

    def _shutdown(self, worker, thread):
        """Stop claiming; let effects in progress finish within the grace period; leave every
        run that did not end resumable (its owner is this process, which is about to die:
        the next worker on this machine takes it over at once)."""
        started = time.monotonic()
        deadline = started + self.grace
        soft = deadline - min(HARD_STOP, self.grace / 2)
        with worker.lock:
            active = list(worker.active.values())
        if active:
            self.emit("stopping", running=len(active), grace=self.grace)
        worker.drain()
        while worker.active and time.monotonic() < soft and not self.hurry.is_set():
            time.sleep(0.02)
        worker.shutdown(interrupt=True, grace=max(0.0, deadline - time.monotonic()))
        if thread.ident is not None:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.emit("stopped", left=sorted(self.interrupted | set(worker.active)), seconds=time.monotonic() - started)
