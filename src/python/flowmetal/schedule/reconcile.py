"""Reconciling: make the `schedules` table agree with what the files declare.

- `since` is set when a schedule is added, edited (new fingerprint: cron,
  time zone, enabled), or re-added after removal: no fire before it is started.
- Removed schedules (no longer declared by any file under the daemon's
  paths) are kept with `enabled = 0` and `removed_at`; their fire history
  stays. Rows of files outside the daemon's paths are left alone, so two
  daemons may serve different directories of one database.
- A file that fails to load (or has any error `flowmetal check` reports)
  keeps its last good schedules: those in memory, or after a restart those
  stored in the database with the hashes of their source texts. So does a
  file read as empty (flowmetal.lang.discovery: part way through a rewrite).
- A schedule paused from the command line (flowmetal.schedule.commands) stays
  paused when its file is edited; a removed and re-added one does not.
"""

import json

from flowmetal.codec import canonical
from flowmetal.errors import FlowmetalError
from flowmetal.schedule.entry import Entry, is_paused
from flowmetal.schedule.spec import ScheduleSpec


class Reconciler:
    """The reconciling part of `Scheduler` (see flowmetal.schedule.scheduler)."""

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
            paused = is_paused(row) and spec.enabled  # an edit does not resume a paused schedule
            store.update_schedule(spec.name, spec=spec_json, fingerprint=entry.fingerprint, since=now,
                                  enabled=int(spec.enabled and not paused), file=spec.file, line=spec.line,
                                  sources=hashes, removed_at=None, updated_at=now)
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
