"""What the pages show, computed from the store: the runs listing with the web
view's extra filters, a run's page (a page of its journal laid out as a timeline)
and the workers view. No HTTP and no HTML here."""

import json
import time

from flowmetal.engine import deferred
from flowmetal.engine.documents import entry_json, run_json
from flowmetal.engine.fork import failed_the_run
from flowmetal.errors import NotFound, UserError
from flowmetal.server import service
from flowmetal.store.base import ENDED, RUN_STATES

PAGE = 50
JOURNAL_PAGE = 200
FOLD = 400  # characters: longer JSON values are folded in <details>
SCAN = 5000  # rows looked at to fill one page of a filtered listing
WAITS = ("sleep", "retry_delay", "wait_signal", "wait", "wait_until")


def pretty(value):
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def shown(value):
    """{"text": pretty JSON, "fold": whether to fold it}."""
    text = pretty(value)
    return {"text": text, "fold": len(text) > FOLD or text.count("\n") > 12}


def list_runs(store, *, state=None, target=None, schedule=None, parent=None, top=False, prefix=None,
              cursor=None, limit=PAGE, since=None, until=None, now=None):
    """service.list_runs plus "top level only" and an id prefix, filtered as the rows
    come (newest first) so the cursor stays a run id: {"runs", "next"}."""
    within = {"since": since, "until": until, "now": now}
    if not (top or prefix):
        return service.list_runs(store, state=state, target=target, schedule=schedule, parent=parent,
                                 limit=limit, cursor=cursor, **within)
    if prefix and not all(c.isalnum() or c in "-_" for c in prefix):
        raise UserError(f"id prefix {prefix!r}: letters, digits, '-' and '_' only")
    before = service.decode_cursor(cursor) if cursor else None
    if prefix and (before is None or before > prefix + "\uffff"):
        before = prefix + "\uffff"
    out, scanned, more = [], 0, False
    while scanned < SCAN:
        page = service.list_runs(store, state=state, target=target, schedule=schedule, parent=parent,
                                 limit=200, cursor=service.encode_cursor(before) if before else None, **within)
        rows = page["runs"]
        scanned += len(rows)
        for r in rows:
            if prefix and not r["id"].startswith(prefix):
                return {"runs": out, "next": None}
            if top and r.get("parent_id"):
                continue
            if len(out) == limit:
                more = True
                break
            out.append(r)
        if more or page["next"] is None or not rows:
            break
        before = rows[-1]["id"]
    nxt = service.encode_cursor(out[-1]["id"]) if (more or scanned >= SCAN) and out else None
    return {"runs": out, "next": nxt}


def kind(entry):
    """What an entry is on the timeline: wait, retry, failed, re-executed or effect."""
    args = entry.get("args") if isinstance(entry.get("args"), dict) else {}
    kinds = []
    if entry["builtin"] in WAITS:
        kinds.append("wait")
    if args.get("attempt", 1) != 1 or entry["builtin"] == "retry_delay":
        kinds.append("retry")
    if entry["status"] == "failed" or entry.get("error"):
        kinds.append("failed")
    if entry.get("reexecuted"):
        kinds.append("reexecuted")
    return kinds or ["effect"]


def run_page(store, ref, after=0, now=None, with_url=False):
    """A run, its children and parent, and JOURNAL_PAGE journal entries after seq `after`
    as timeline bars on an axis spanning the whole run."""
    from flowmetal.engine.gate import decode_result

    now = time.time() if now is None else now
    raw = store.find_run(ref)
    run = run_json(raw)
    entries = store.journal(run["id"])  # rows only; only the page shown is decoded
    t0 = run.get("started_at") or run["created_at"]
    ends = [e["ended_at"] or e["started_at"] for e in entries[-1:]] + [run.get("ended_at") or 0]
    t1 = max([*ends, t0]) if run["state"] in ENDED else max(now, *ends, t0)
    span = max(t1 - t0, 1e-3)
    page = [e for e in entries if e["seq"] > after][:JOURNAL_PAGE]
    bars = []
    for e in page:
        doc = entry_json(e, lambda text: decode_result(store, text))
        end = doc["ended_at"] or (now if run["state"] not in ENDED else doc["started_at"])
        left = min(max((doc["started_at"] - t0) / span, 0.0), 1.0)
        width = min(max((end - doc["started_at"]) / span, 0.002), 1.0 - left) if left < 1 else 0.002
        kinds = kind(doc)
        if run["state"] == "failed" and e is entries[-1] and "failed" not in kinds and failed_the_run(raw, e):
            kinds = [k for k in kinds if k != "effect"] + ["failed"]  # (its effect's failure failed the run)
        bars.append({**doc, "kinds": kinds, "duration": max(end - doc["started_at"], 0.0),
                     "open": doc["ended_at"] is None, "left": round(left * 100, 3),
                     "width": round(max(width, 0.002) * 100, 3),
                     "args_shown": shown(doc.get("args")), "result_shown": shown(doc.get("result")),
                     "data_shown": shown(doc["data"]) if doc.get("data") is not None else None})
    last_seq = entries[-1]["seq"] if entries else 0
    children = [run_json(c) for c in store.list_runs(parent_id=run["id"], limit=1000)]
    parent = store.get_run(run["parent_id"]) if run.get("parent_id") else None
    waiting = run.get("waiting_for") or None
    retry_at = None
    if run["state"] == "failed":
        retry_at = entries[-1]["seq"] - 1 if entries and failed_the_run(raw, entries[-1]) else len(entries)
    return {
        "run": run, "args": shown(run.get("args")), "posargs": shown(run["posargs"]) if run.get("posargs") else None,
        "result": shown(run.get("result")) if run["state"] == "completed" else None,
        "bars": bars, "total": len(entries), "after": after, "t0": t0, "t1": t1, "span": span,
        "next_after": page[-1]["seq"] if page and page[-1]["seq"] < last_seq else None,
        "prev_after": max(after - JOURNAL_PAGE, 0) if after > 0 else None,
        "children": children, "parent": run_json(parent) if parent else None,
        "waiting": waiting, "ended": run["state"] in ENDED, "retry_at": retry_at,
        "deferred": deferred_wait(store, run, entries, with_url) if waiting and run["state"] not in ENDED else None,
    }


def deferred_wait(store, run, entries, with_url):
    """What a run waiting for a deferred effect waits for: a callback ({"kind": "callback", seq,
    name, approval, state, deadline, url}: `url` only `with_url`, as the URL is the capability to
    complete it) or a task ({"kind": "task", id, queue, attempts, lease_expires, deadline}); None
    for other waits."""
    from flowmetal.engine.gate import decode_result

    w = run["waiting_for"]
    if w.get("kind") != "effect" or w.get("seq") is None:
        return None
    row = store.get_deferred(run["id"], w["seq"])
    if row is None:
        return None
    detail = json.loads(row["detail"])
    common = {"seq": row["seq"], "state": row["state"], "deadline": row["deadline"], "created_at": row["created_at"]}
    if row["queue"] is not None:
        return {"kind": "task", "id": f"{row['run_id']}:{row['seq']}", "queue": row["queue"],
                "attempts": row["attempts"], "lease_expires": row["lease_expires"], **common}
    if row.get("token_hash") is None:
        return None
    url = None
    if with_url:
        recorded = next((e for e in entries if e["seq"] == row["seq"]), None)
        base = (decode_result(store, recorded["result"]) or {}).get("base") if recorded and recorded["result"] \
            else deferred.public_url()
        url = f"{base}/callbacks/{callback_token(store, run['id'], row['seq'])}"
    return {"kind": "callback", "name": detail.get("callback"), "approval": bool(detail.get("approval")),
            "url": url, **common}


def callback_token(store, run_id, seq):
    """The URL token of the callback at `seq`, derived as the gate derives it (engine/gate.py
    _create_deferred): from the server secret next to the database."""
    secret = deferred.store_secret(store)
    return deferred.callback_token(secret, run_id, seq)


def approval(store, run_id, seq):
    """The waiting approval callback at (run_id, seq), or a UserError saying why not."""
    row = store.get_deferred(run_id, seq)
    if row is None or row.get("token_hash") is None:
        raise NotFound(f"run {run_id} has no callback at journal position {seq}")
    if not json.loads(row["detail"]).get("approval"):
        raise UserError(f"the callback at position {seq} of run {run_id} is not an approval "
                        f"(callback(approval = True)); call its URL instead")
    return row


def states(store, ids):
    """{id: {"state", "entries"}} for the live updates (at most 200 ids)."""
    out = {}
    for run_id in ids[:200]:
        row = store.get_run(run_id)
        if row is not None:
            out[run_id] = {"state": row["state"], "updated_at": row.get("updated_at")}
    return out


TASKS_SHOWN = 20  # waiting tasks listed per queue (the depth counts them all)


def workers(store, now=None):
    """The worker processes (as `flowmetal workers`), the runs being executed grouped by the
    worker (owner) holding their lease, the task queues (store.task_queues: depth, tasks
    under a live lease, oldest task) with their oldest waiting tasks, and the queued runs."""
    from flowmetal.engine.worker import worker_rows

    now = time.time() if now is None else now
    running = store.runs_page(state="running", limit=1000)
    by_owner = {}
    for r in running:
        by_owner.setdefault(r.get("owner") or "(no owner)", []).append(
            {**run_json(r), "lease_left": None if r.get("lease_expires") is None else r["lease_expires"] - now})
    pending = store.runs_page(state="pending", limit=1000)
    queues = []
    for q in store.task_queues(now):
        tasks = []
        for t in store.waiting_deferred(q["queue"], limit=TASKS_SHOWN * 2):
            run = store.get_run(t["run_id"])
            if run is None or run["state"] in ENDED or len(tasks) == TASKS_SHOWN:
                continue
            leased = t["lease_expires"] is not None and t["lease_expires"] >= now
            tasks.append({"id": f"{t['run_id']}:{t['seq']}", "run_id": t["run_id"], "seq": t["seq"],
                          "age": now - t["created_at"], "created_at": t["created_at"], "attempts": t["attempts"],
                          "leased": leased, "lease_expires": t["lease_expires"],
                          "lease_left": None if t["lease_expires"] is None else t["lease_expires"] - now,
                          "deadline": t["deadline"], "payload": _task_payload(t)})
        queues.append({**q, "oldest_age": None if q["oldest"] is None else now - q["oldest"], "tasks": tasks})
    return {"workers": sorted(by_owner.items()), "pending": [run_json(r) for r in pending],
            "processes": [w for w in worker_rows(store, now) if w["status"] != "stopped"][:50],
            "queues": queues, "now": now,
            "counts": store.run_state_counts() if hasattr(store, "run_state_counts") else {}}


def _task_payload(row):
    text = pretty(json.loads(row["detail"]).get("payload"))
    return text if len(text) <= 120 else text[:117] + "..."


STATES = RUN_STATES
