"""Retention for the SQLite store: `prune` deletes ended run trees and what nothing refers to."""

import json
import sqlite3
from contextlib import nullcontext

from flowmetal.store.sqlite.schema import ENDED_SQL, JOURNAL_KEY

BLOB_GRACE = 3600.0  # seconds
PRUNE_BATCH = 200  # run trees deleted per transaction, so writers wait for prune only briefly


class Retention:
    # --- retention -------------------------------------------------------------

    # Top-level runs (no parent) that ended before ?1, with every descendant ended
    # before ?1 too. A child is deleted only with its top-level run, whose wait()
    # may still read it. Each incarnation of a continue_as_new chain is a run of its own
    # (top-level, or a child of the same parent as the first).
    _PRUNABLE = f"""
        WITH RECURSIVE tree(top, id, state, ended_at) AS (
            SELECT id, id, state, ended_at FROM runs
             WHERE parent_id IS NULL AND state IN ({ENDED_SQL})
               AND ended_at < ?1
            UNION ALL
            SELECT t.top, r.id, r.state, r.ended_at FROM runs r JOIN tree t ON r.parent_id = t.id
        )
        SELECT top FROM tree GROUP BY top
        HAVING sum(state NOT IN ({ENDED_SQL})) = 0
           AND max(coalesce(ended_at, 1e300)) < ?1
    """

    _TREES = """
        WITH RECURSIVE tree(id) AS (
            SELECT value FROM json_each(?)
            UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id
        )
        SELECT runs.id, runs.num FROM tree JOIN runs ON runs.id = tree.id
    """

    # Fires before ?1 whose outcome is recorded (or whose run is gone), never a buffered one, and never one
    # after its schedule's last_fire (fires are never planned at or before last_fire,
    # so a deleted row can never be fired again).
    _OLD_FIRES = """
        nominal < ?1 AND action != 'buffered'
         AND NOT (action = 'started' AND run_state IS NULL AND run_id IN (SELECT id FROM runs))
         AND nominal <= coalesce((SELECT last_fire FROM schedules s WHERE s.name = fires.schedule), -1e300)
    """

    def prune(self, before, now, dry_run=False):
        """Delete every top-level run that ended before `before` together with its
        descendants (when all of them ended before it too): their journals, logs,
        signals and pinned-source links; fires before `before` whose outcome is recorded;
        then sources and blobs nothing refers to any more. With `dry_run`, count instead
        (sources and blobs are then not counted). One transaction per PRUNE_BATCH trees."""
        tops = [r[0] for r in self.x(self._PRUNABLE, (before,))]
        counts = dict.fromkeys(("runs", "journal", "logs", "signals", "fires", "sources", "blobs"), 0)
        for i in range(0, len(tops), PRUNE_BATCH):
            with nullcontext() if dry_run else self.transaction():
                runs = self.x(self._TREES, (json.dumps(tops[i:i + PRUNE_BATCH]),)).fetchall()
                ids = [(run_id,) for run_id, _ in runs]
                counts["runs"] += len(runs)
                counts["journal"] += self._delete(dry_run, "journal", "key BETWEEN ? AND ?",
                                                  [(n * JOURNAL_KEY, n * JOURNAL_KEY + JOURNAL_KEY - 1) for _, n in runs])
                counts["logs"] += self._delete(dry_run, "logs", "run_id = ?", ids)
                counts["signals"] += self._delete(dry_run, "signals", "run_id = ?", ids)
                self._delete(dry_run, "deferred", "run_id = ?", ids)
                self._delete(dry_run, "run_sources", "run_id = ?", ids)
                self._delete(dry_run, "runs", "id = ?", ids)
        with nullcontext() if dry_run else self.transaction():
            counts["fires"] = self._delete(dry_run, "fires", self._OLD_FIRES, [(before,)])
            if not dry_run:
                counts["sources"] = self._delete(False, "sources", self._UNUSED_SOURCES, [()])
        if not dry_run:
            counts["blobs"] = self._delete_unreferenced_blobs(now - BLOB_GRACE)
        return counts

    _UNUSED_SOURCES = """
        hash NOT IN (SELECT hash FROM run_sources) AND hash NOT IN
        (SELECT j.value FROM schedules, json_each(schedules.sources) j WHERE schedules.sources IS NOT NULL)
    """

    def _delete(self, dry_run, table, where, params):
        """Delete (with dry_run: count) the rows of `table` matching `where`, once per parameter tuple."""
        if dry_run:
            return sum(self.x(f"SELECT count(*) FROM {table} WHERE {where}", p).fetchone()[0] for p in params)
        try:
            return self.conn.executemany(f"DELETE FROM {table} WHERE {where}", params).rowcount
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _delete_unreferenced_blobs(self, touched_before):
        """Blobs no journal result refers to and not written since `touched_before`. The
        references are read outside the write transaction: a blob written after that read
        is newer than `touched_before`, so it is not a candidate."""
        referenced = set()
        for (text,) in self.x("""SELECT result FROM journal WHERE result LIKE '{"$%'"""):
            doc = json.loads(text)
            if "$blob" in doc:
                referenced.add(doc["$blob"])
            referenced.update((doc.get("$parts") or {}).values())
        stale = [r[0] for r in self.x("SELECT hash FROM blobs WHERE touched_at < ?", (touched_before,))]
        with self.transaction():
            return self._delete(False, "blobs", "hash = ? AND touched_at < ?",
                                [(h, touched_before) for h in stale if h not in referenced])

