"""Outcomes: buffered fires whose turn came, the end state of fired runs, on_failure.

on_failure: when a started fire's run (following continue_as_new to the
last run) ends `failed` or `timed_out`, a run of the on_failure function
is created with keyword arguments run_id (the run that failed), schedule,
fire_time (ISO 8601 UTC, "2026-01-01T02:00:00Z"), state and error (the
run's error text). The fire row's run_state is set in the same transaction
(only if still unset), so the follow-up is started once.
"""

from flowmetal.engine import runs as run_ops
from flowmetal.engine.runs import last_incarnation
from flowmetal.schedule.entry import FAILURE_STATES, FixedClock, iso_utc, split_target
from flowmetal.store.base import ENDED


class Outcomes:
    """The follow-up part of `Scheduler` (see flowmetal.schedule.scheduler)."""

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
        tip = last_incarnation(self.store, dict(row, id=row["run_id"]))  # continue_as_new: the chain's last run decides
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
