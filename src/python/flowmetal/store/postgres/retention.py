"""Retention for the PostgreSQL store: the same rules as store/sqlite/retention.py, in PostgreSQL's SQL."""

import json

from flowmetal.store.postgres.schema import ENDED_SQL
from flowmetal.store.sqlite.retention import BLOB_GRACE, PRUNE_BATCH

# Top-level runs that ended before %(before)s, with every descendant ended before it too.
_PRUNABLE = f"""
    WITH RECURSIVE tree(top, id, state, ended_at) AS (
        SELECT id, id, state, ended_at FROM runs
         WHERE parent_id IS NULL AND state IN ({ENDED_SQL}) AND ended_at < %(before)s
        UNION ALL
        SELECT t.top, r.id, r.state, r.ended_at FROM runs r JOIN tree t ON r.parent_id = t.id
    )
    SELECT top FROM tree GROUP BY top
    HAVING bool_and(state IN ({ENDED_SQL})) AND max(coalesce(ended_at, 1e300)) < %(before)s
"""

_TREES = """
    WITH RECURSIVE tree(id) AS (
        SELECT unnest(%(tops)s::text[])
        UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id
    )
    SELECT id FROM tree
"""

_OLD_FIRES = """
    nominal < %(before)s AND action != 'buffered'
     AND NOT (action = 'started' AND run_state IS NULL AND run_id IN (SELECT id FROM runs))
     AND nominal <= coalesce((SELECT last_fire FROM schedules s WHERE s.name = fires.schedule), -1e300)
"""

_UNUSED_SOURCES = """
    hash NOT IN (SELECT hash FROM run_sources) AND hash NOT IN
    (SELECT jsonb_each_text.value FROM schedules, jsonb_each_text(schedules.sources::jsonb)
      WHERE schedules.sources IS NOT NULL)
"""


class Retention:
    def prune(self, before, now, dry_run=False):
        """See store/base.py and store/sqlite/retention.py: the same deletions, by arrays of ids."""
        tops = [r[0] for r in self.q(_PRUNABLE, {"before": before})]
        counts = dict.fromkeys(("runs", "journal", "logs", "signals", "fires", "sources", "blobs"), 0)
        for i in range(0, len(tops), PRUNE_BATCH):
            with self.transaction():
                ids = [r[0] for r in self.q(_TREES, {"tops": tops[i:i + PRUNE_BATCH]})]
                counts["runs"] += len(ids)
                for table, key in (("journal", "journal"), ("logs", "logs"), ("signals", "signals"),
                                   ("deferred", None), ("run_sources", None), ("runs", None)):
                    col = "id" if table == "runs" else "run_id"
                    n = self._delete(dry_run, table, f"{col} = ANY(%(ids)s::text[])", {"ids": ids})
                    if key:
                        counts[key] += n
        with self.transaction():
            counts["fires"] = self._delete(dry_run, "fires", _OLD_FIRES, {"before": before})
            if not dry_run:
                counts["sources"] = self._delete(False, "sources", _UNUSED_SOURCES, {})
        if not dry_run:
            counts["blobs"] = self._delete_unreferenced_blobs(now - BLOB_GRACE)
        return counts

    def _delete(self, dry_run, table, where, params):
        if dry_run:
            return self.q(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
        return self.q(f"DELETE FROM {table} WHERE {where}", params).rowcount

    def _delete_unreferenced_blobs(self, touched_before):
        referenced = set()
        for (text,) in self.q("""SELECT result FROM journal WHERE result LIKE '{"$%%'"""):
            doc = json.loads(text)
            if "$blob" in doc:
                referenced.add(doc["$blob"])
            referenced.update((doc.get("$parts") or {}).values())
        stale = [r[0] for r in self.q("SELECT hash FROM blobs WHERE touched_at < %s", (touched_before,))]
        gone = [h for h in stale if h not in referenced]
        with self.transaction():
            return self._delete(False, "blobs", "hash = ANY(%(gone)s::text[]) AND touched_at < %(t)s",
                                {"gone": gone, "t": touched_before})
