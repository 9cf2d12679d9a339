"""Firing: turn the fire times that are due into `fires` rows and runs.

A fire happens once. Every decision about a nominal fire time is a row in
`fires`, UNIQUE (schedule, nominal), and a started fire's run is created in
the same transaction as its row; only the process whose INSERT inserted the
row creates the run. Each tick's work happens under BEGIN IMMEDIATE after
re-reading the schedule's persisted `last_fire`, so a second scheduler on the
same database (or this one after a crash between any two statements) plans
nothing twice (DBOS: deterministic ids for scheduled fires).

Jitter: a started fire's run is created at nominal + `stable_jitter`; the
on-time grace of the planner is widened by the schedule's jitter. A jitter
larger than the interval between fires makes a later fire supersede an
earlier one (as the catch-up policy says).

Overlap: "active" means a run of the schedule that has not ended (pending,
running or waiting; a continue_as_new chain stays active). Catch-up starts
are subject to the overlap policy like any other. Buffered fires are rows
with action "buffered"; when no run of the schedule is active the oldest
is started (buffer_all drains them one after another). `cancel_other`
cancels the active runs; pending and waiting ones end at once and the new
run starts in the same transaction, a running one is asked to stop and the
new fire waits in the buffer until it has (Temporal waits too); a later
fire supersedes a fire still waiting that way.
"""

from flowmetal.engine import runs as run_ops
from flowmetal.errors import UserError
from flowmetal.schedule.cron import stable_jitter
from flowmetal.schedule.entry import R_SUPERSEDED, FixedClock, dt, is_paused, split_target
from flowmetal.schedule.planner import (
    BUFFER, CANCEL_THEN_START, MISS, ON_TIME_GRACE, OVERLAP_SKIP_REASON, SKIP, overlap_decision, plan_fires,
)

CHUNK = 10  # due schedules handled per transaction (short transactions: workers write too)


class Firing:
    """The firing part of `Scheduler` (see flowmetal.schedule.scheduler)."""

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
        plan = plan_fires(spec, None if last is None else dt(last), dt(since), dt(now),
                          grace=ON_TIME_GRACE + (spec.jitter or 0.0), paused=is_paused(row))
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

    def start_manual(self, entry, nominal, reason, now, existing=None):
        """Record a fire started by hand (trigger, backfill) at `nominal` and create its run,
        in one transaction, whatever the overlap policy; emits its events after the commit.

        existing: the fire row already recorded for that time, if any. A missed or
        skipped fire is started (its reason says what it was); a summary row (several
        missed fires) keeps covering the rest from the next fire time on. Any other
        fire (started, buffered) is left as it is. Returns (run id or None, why not).
        """
        store, name = self.store, entry.spec.name
        events, created = [], []
        with store.transaction():
            if existing is None:
                if not store.insert_fire({"schedule": name, "nominal": nominal, "action": "started", "reason": reason,
                                          "recorded_at": now, "start_at": nominal}):
                    return None, "a fire at that time is already recorded"
            elif existing["action"] in ("missed", "skipped"):
                reason = f"{reason} (was {existing['action']}: {existing['reason']})"
                store.update_fire(name, nominal, action="started", reason=reason, through=None, recorded_at=now)
                through = existing["through"]
                if through is not None:  # the summary's other fires stay recorded as missed
                    nxt = self._next.after(entry.spec, nominal)
                    if nxt is not None and nxt <= through:
                        store.insert_fire({"schedule": name, "nominal": nxt, "action": existing["action"],
                                           "reason": existing["reason"], "recorded_at": existing["recorded_at"],
                                           "through": None if nxt == through else through})
            else:
                return None, f"already {existing['action']}" + (f" as run {existing['run_id']}" if existing["run_id"] else "")
            run_id = self._create(entry, nominal, reason, now, events, created)
        self._flush(events)
        if run_id is None:
            return None, next((f["reason"] for kind, f in events if kind == "skip"), "no run was created")
        return run_id, None

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
