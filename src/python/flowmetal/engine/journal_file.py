"""Runs as `*.journal.json` files: a run tree's rows, journals and pinned code, outside any database.

The format (doc/architecture.md, "Journal files") is what the golden journals
in tests/testdata/ are written in, and what a later `flowmetal export` /
`replay --file` reads and writes:

    {"format": "flowmetal-journal/1",
     "flowmetal": "0.1.0",            # the release that recorded it
     "description": "...",
     "runs": [                        # the root first, then its descendants
       {"run": {...},                 # the run row; args/posargs/result/waiting_for as JSON values;
                                      # a forked run also has forked_from and forked_at
        "journal": [{...}],           # entries exactly as stored: args, result and data are TEXT
        "sources": {"file.star": "..."},
        "signals": [{"name", "payload", "sent_at", "consumed_seq"}]}],
     "blobs": {"<hash>": "<data>"}}   # blobs the journals refer to

Journal `args`, `digest`, `result` and `data` are kept as the stored text,
byte for byte, so that digests recorded by an old release stay comparable.

A forked run (engine/fork.py) carries `forked_from` (the old run's id) and
`forked_at` (how many of its journal entries were copied); the old run itself is
not in the file unless it is part of the tree. Its journal holds the copied
prefix, so the file replays on its own; a later `wait` on a child the prefix
spawned replays from its recorded result (the old run's ended children are not
exported).
"""

import json

from flowmetal.codec import canonical

FORMAT = "flowmetal-journal/1"

# Run columns a journal file carries (the rest are the owning process's: owner, lease).
RUN_FIELDS = ("id", "file", "function", "args", "posargs", "state", "result", "error", "created_at",
              "started_at", "ended_at", "root_dir", "parent_id", "root_id", "continued_from", "continued_as",
              "schedule", "fire_time", "waiting_for", "wake_at", "deadline", "cancel_requested", "executions")
FORK_FIELDS = ("forked_from", "forked_at")  # (only in a forked run's entry: files of other runs are unchanged)
_JSON_FIELDS = ("args", "posargs", "result", "waiting_for")
JOURNAL_FIELDS = ("seq", "builtin", "args", "digest", "status", "result", "error", "data", "started_at",
                  "ended_at", "reexecuted")
_IMPORTER = "journal-file-import"


def export_tree(store, run_id, description="", version=None):
    """The journal-file document of run `run_id` and its descendants."""
    from flowmetal import __version__

    ids = [run_id, *store.descendants(run_id)]
    runs, blobs = [], {}
    for rid in ids:
        row = store.get_run(rid)
        run = {k: row.get(k) for k in RUN_FIELDS}
        for k in _JSON_FIELDS:
            run[k] = None if run[k] is None else json.loads(run[k])
        for k in ("flowmetal_version", "prelude_digest", "digest_version", *FORK_FIELDS):
            if row.get(k) is not None:
                run[k] = row[k]
        journal = [{k: e.get(k) for k in JOURNAL_FIELDS} for e in store.journal(rid)]
        for e in journal:
            for h in _blob_refs(e["result"]):
                blobs[h] = store.get_blob(h)
        signals = [{k: s[k] for k in ("name", "payload", "sent_at", "consumed_seq")} for s in store.signals(rid)]
        runs.append({"run": run, "journal": journal, "sources": store.pinned_sources(rid), "signals": signals})
    return {"format": FORMAT, "flowmetal": version or __version__, "description": description,
            "runs": runs, "blobs": blobs}


def import_tree(store, doc, sources=None):
    """Insert the runs of a journal-file document into `store` as they were recorded.

    `sources` ({file: text}) replaces the pinned code of every run (a changed
    workflow, to see it diverge). Returns the root run's id.
    """
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a Flowmetal journal file (format {doc.get('format')!r}, expected {FORMAT!r})")
    with store.transaction():
        for item in doc["runs"]:
            run = dict(item["run"])
            state = run["state"]
            for k in _JSON_FIELDS:
                run[k] = None if run.get(k) is None else canonical(run[k])
            run["state"], run["owner"] = "running", _IMPORTER  # the journal is written under a fence
            store.insert_run({k: v for k, v in run.items() if v is not None or k in RUN_FIELDS})
            store.pin_sources(run["id"], sources or item["sources"])
            for e in item["journal"]:
                if not store.insert_journal({"run_id": run["id"], **{k: e[k] for k in JOURNAL_FIELDS if k != "reexecuted"}},
                                            _IMPORTER):
                    raise ValueError(f"cannot import journal entry {e['seq']} of run {run['id']}")
                if e.get("reexecuted"):
                    store.update_journal(run["id"], e["seq"], _IMPORTER, reexecuted=1)
            for s in item.get("signals", ()):
                store.insert_signal(run["id"], s["name"], s["payload"], s["sent_at"])
                if s["consumed_seq"] is not None:
                    store.take_signal(run["id"], s["name"], s["consumed_seq"])
            store.update_run(run["id"], if_owner=_IMPORTER, state=state, owner=None, lease_expires=None)
        for data in doc.get("blobs", {}).values():
            store.put_blob(data, 0.0)
    return doc["runs"][0]["run"]["id"]


def read_file(path):
    """The document of a journal file; a UserError when it is not one."""
    from flowmetal.errors import UserError

    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"{path}: not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("runs"):
        raise UserError(f"{path}: not a Flowmetal journal file (expected format {FORMAT!r})")
    return doc


def write_file(store, run_id, path, description=""):
    """Write run `run_id` and its descendants to `path` as a journal file; returns the run count."""
    doc = export_tree(store, run_id, description=description)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    return len(doc["runs"])


def _blob_refs(text):
    """Blob hashes a journal result refers to ({"$blob": h} or {"$parts": {...}})."""
    if not text or not text.startswith('{"$'):
        return []
    value = json.loads(text)
    if not isinstance(value, dict):
        return []
    if set(value) == {"$blob"}:
        return [value["$blob"]]
    if set(value) == {"$parts", "$value"}:
        return list(value["$parts"].values())
    return []
