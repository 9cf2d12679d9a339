"""Runs and journal entries as JSON documents: the shape of `flowmetal show --json`,
`flowmetal runs --json` and the HTTP API (one shape, so they cannot drift).

No click or rich here: the CLI's renderer and the server both build on it.
"""

import json


def run_json(run):
    """A run row with its JSON columns decoded."""
    doc = dict(run)
    for key in ("args", "posargs", "result", "waiting_for"):
        if doc.get(key) is not None:
            doc[key] = json.loads(doc[key])
    return doc


def entry_json(entry, decode=json.loads):
    """A journal entry as JSON; `decode` turns a stored result into the value the program saw."""
    doc = dict(entry)
    for key in ("args", "data"):
        if doc.get(key) is not None:
            doc[key] = json.loads(doc[key])
    if doc.get("result") is not None:
        doc["result"] = decode(doc["result"])
    return doc


def run_document(store, run):
    """`flowmetal show --json`: the run, its journal and its children's ids."""
    from flowmetal.engine.gate import decode_result

    doc = run_json(run)
    doc["journal"] = [entry_json(e, lambda text: decode_result(store, text)) for e in store.journal(run["id"])]
    doc["children"] = [c["id"] for c in store.list_runs(parent_id=run["id"], limit=10_000)]
    return doc
