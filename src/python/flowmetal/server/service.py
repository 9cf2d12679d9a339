"""What the API does, as plain functions over the store: the same library calls
the CLI makes (flowmetal.engine.runs), plus what only the API needs (idempotent
starts, pages and cursors). No HTTP here; routes parse, call one of these, render.
"""

import base64
import binascii
import datetime
import hashlib
import math
import posixpath
from pathlib import Path

from flowmetal.clock import SYSTEM
from flowmetal.codec import canonical
from flowmetal.durations import parse_duration
from flowmetal.engine import runs as run_ops
from flowmetal.engine.documents import entry_json, run_document, run_json
from flowmetal.errors import UserError
from flowmetal.ids import new_run_id
from flowmetal.lang.refs import parse_target
from flowmetal.store.base import ENDED, RUN_STATES

MAX_PAGE = 500


class Conflict(UserError):
    """The request is valid but the run's state does not allow it (HTTP 409)."""

    http_status = 409


def split_target(target):
    """"file.star:function" -> (file name inside the workspace, function)."""
    file, function = parse_target(target)
    norm = posixpath.normpath(file) if file else ""
    if not norm.endswith(".star") or norm.startswith(("/", "..", "@")) or "\\" in norm or "\x00" in target:
        raise UserError(f"target {target!r}: expected \"FILE.star:FUNCTION\", FILE relative to the workspace root")
    return norm, function


def start_run(store, clock, root, *, target, args, timeout=None, idempotency_key=None):
    """Queue a run of `target`; returns (run row, created). With an idempotency key,
    the first request makes the run and every later one with that key returns it:
    the look-up and the insert are one transaction, so concurrent requests make one run."""
    file, function = split_target(target)
    request = hashlib.sha256(canonical({"target": f"{file}:{function}", "args": args,
                                        "timeout": timeout}).encode()).hexdigest()
    if idempotency_key is not None:
        existing = _existing(store, idempotency_key, request)
        if existing is not None:
            return existing, False
    if not (Path(root) / file).is_file():
        raise UserError(f"{file} does not exist in the workspace {root}")
    name, texts = run_ops.load_target(root, Path(root) / file, function)
    with store.transaction():
        if idempotency_key is not None:
            existing = _existing(store, idempotency_key, request)
            if existing is not None:
                return existing, False
        run_id = run_ops.create_run(store, clock, file=name, function=function, args=args, texts=texts,
                                    root_dir=str(root), timeout=timeout)
        if idempotency_key is not None:
            store.insert_idempotency_key(idempotency_key, run_id, request, clock.now())
    return store.get_run(run_id), True


def _existing(store, key, request):
    row = store.idempotent_run(key)
    if row is None:
        return None
    if row["request"] != request:
        raise Conflict(f"Idempotency-Key {key!r} was used for a different request (another target, "
                       f"arguments or timeout)")
    run = store.get_run(row["run_id"])
    if run is None:
        raise Conflict(f"Idempotency-Key {key!r} names run {row['run_id']}, which was pruned")
    return run


# --- listing ----------------------------------------------------------------------


def encode_cursor(run_id):
    return base64.urlsafe_b64encode(f"r1:{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor):
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("r1:") or len(text) < 4:
        raise UserError(f"cursor {cursor!r} is not one this server gave out")
    return text[3:]


TIME_SLACK = 5.0  # seconds: a run's id is stamped a moment before its created_at (a child's id is made first)
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


def parse_time(value, name, now):
    """A `since`/`until` bound as epoch seconds: a number (epoch seconds), an ISO 8601 date or
    date and time (UTC unless it carries an offset: "2026-12-01", "2026-12-01T09:30Z",
    "2026-12-01T10:30+01:00"), or a duration ("90m", "24h", "7d"): that long before `now`."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        seconds = None
        try:
            seconds = float(text)
        except ValueError:
            pass
        if seconds is None and text[:4].isdigit() and "-" in text:
            try:
                when = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            except ValueError:
                raise UserError(f"{name}={text!r}: not an ISO 8601 date or time (e.g. 2026-12-01T09:30Z)") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            try:
                seconds = when.timestamp()
            except (OverflowError, ValueError):
                seconds = -1.0  # (out of range, said below)
        if seconds is None:
            try:
                seconds = now - parse_duration(text, name)
            except ValueError:
                raise UserError(f"{name}={text!r}: expected epoch seconds, an ISO 8601 date or time "
                                f"(2026-12-01T09:30Z) or a duration before now (24h)") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_TIME):
        raise UserError(f"{name}={value!r}: out of range (1970 to 9999)")
    return seconds


def _id_floor(seconds):
    """The smallest run id created at `seconds` or later (ids start with their time, see ids.py)."""
    return new_run_id(max(seconds, 0.0))[:9]


def list_runs(store, *, state=None, target=None, schedule=None, parent=None, limit=50, cursor=None,
              since=None, until=None, now=None):
    """{"runs": [...], "next": cursor or None}, newest first; with `since`/`until` (parse_time),
    only the runs created at `since` or later and before `until`.

    Run ids are time-sortable, so the range is first a range of ids (with TIME_SLACK of margin,
    as a run's id is stamped a moment before its created_at), then exact on created_at."""
    if state is not None and state not in RUN_STATES:
        raise UserError(f"state {state!r}: expected one of {', '.join(RUN_STATES)}")
    file = function = None
    if target is not None:
        if ":" in target:
            file, function = split_target(target)
        else:
            file = split_target(target + ":main")[0]
    if now is None:
        now = (getattr(store, "clock", None) or SYSTEM).now()
    low, high = parse_time(since, "since", now), parse_time(until, "until", now)
    before = decode_cursor(cursor) if cursor is not None else None
    if high is not None:
        bound = _id_floor(high + TIME_SLACK)
        before = bound if before is None else min(before, bound)
    floor = _id_floor(low - TIME_SLACK) if low is not None and low > TIME_SLACK else None
    out, done = [], False
    while len(out) <= limit and not done:
        rows = store.runs_page(state=state, file=file, function=function, schedule=schedule, parent_id=parent,
                               before_id=before, limit=limit + 1)
        done = len(rows) <= limit
        for r in rows:
            if floor is not None and r["id"] < floor:
                done = True
                break
            if (low is None or r["created_at"] >= low) and (high is None or r["created_at"] < high):
                out.append(r)
        if rows:
            before = rows[-1]["id"]
    page = out[:limit]
    return {"runs": [run_json(r) for r in page],
            "next": encode_cursor(page[-1]["id"]) if len(out) > limit else None}


# --- one run -------------------------------------------------------------------------


def show(store, ref):
    return run_document(store, store.find_run(ref))


def journal(store, ref, after=0):
    from flowmetal.engine.gate import decode_result

    run = store.find_run(ref)
    return {"run_id": run["id"], "journal": [entry_json(e, lambda t: decode_result(store, t))
                                             for e in store.journal(run["id"]) if e["seq"] > after]}


def logs(store, run_id, after=0):
    """Log lines after the cursor `after` (a log row id): (lines, next cursor)."""
    rows = store.logs(run_id, after)
    lines = [{"cursor": str(r["rowid"]), "seq": r["seq"], "n": r["n"], "time": r["time"],
              "stream": r["stream"], "line": r["line"]} for r in rows]
    return lines, (lines[-1]["cursor"] if lines else str(after))


def parse_log_cursor(text):
    if text is None or text == "":
        return 0
    if not text.isdigit() or len(text) > 18:
        raise UserError(f"cursor {text!r} is not one this server gave out")
    return int(text)


def outcome(store, run_id):
    """(ended, run document) of the last run of the continue_as_new chain that starts at run_id."""
    run = run_ops.last_incarnation(store, store.get_run(run_id))
    return run["state"] in ENDED, run_json(run)


def cancel(store, clock, ref):
    run = store.find_run(ref)
    if run["state"] in ENDED:
        raise Conflict(f"run {run['id']} has already ended ({run['state']})")
    run_id = run_ops.cancel_run(store, clock, run["id"])
    return run_json(store.get_run(run_id))


def signal(store, clock, ref, name, payload_text):
    run = store.find_run(ref)
    if run["state"] in ENDED:
        raise Conflict(f"run {run['id']} has ended ({run['state']}); it can receive no signal")
    run_id = run_ops.send_signal(store, clock, run["id"], name, payload_text)
    return run_json(store.get_run(run_id))


# --- fork and retry ---------------------------------------------------------------------


def _conflict(exc):
    """A UserError the run's (or the workspace's) state caused, as a 409 with its whole text."""
    diagnostics = getattr(exc, "diagnostics", None)
    return Conflict("\n".join(d.render() for d in diagnostics) if diagnostics else str(exc))


def fork(store, clock, ref, at, current=False):
    """`flowmetal fork RUN --at AT [--current]`: (new run, source run). An unknown run is
    NotFound (404); `at` beyond the journal a UserError (400); anything the library refuses
    after that (the prefix diverges, an entry is still open, a child of the prefix still
    runs, the current files fail to load) a Conflict (409), with nothing created."""
    from flowmetal.engine.fork import fork_run

    source = store.find_run(ref)
    n = len(store.journal(source["id"]))
    if at > n:
        raise UserError(f"at {at}: run {source['id']} has {n} journal entries (fork at 0..{n})")
    try:
        run_id = fork_run(store, source["id"], at, current=current, clock=clock)
    except UserError as e:
        raise _conflict(e) from None
    return store.get_run(run_id), source


def retry(store, clock, ref):
    """`flowmetal retry RUN`: (new run, source run, position). A run that has not failed is a
    Conflict, as is a retry the library refuses (the files on disk diverge from the prefix)."""
    from flowmetal.engine.fork import retry_run

    source = store.find_run(ref)
    if source["state"] != "failed":
        raise Conflict(f"run {source['id']} is {source['state']}, not failed; retry takes a failed run "
                       f"(POST /api/v1/runs/{source['id']}/fork forks any run)")
    try:
        run_id, at = retry_run(store, source["id"], clock=clock)
    except UserError as e:
        raise _conflict(e) from None
    return store.get_run(run_id), source, at


# --- schedules ----------------------------------------------------------------------------


def _schedule_row(store, name):
    from flowmetal.errors import NotFound

    row = store.get_schedule(name)
    if row is None:
        raise NotFound(f"no schedule named {name!r} (a schedule is known once the scheduler has loaded its file; "
                       f"GET /api/v1/schedules lists them)")
    return row


def schedule_json(store, specs, name, now):
    """The schedule `name` as GET /schedules shows it."""
    from flowmetal.schedule.views import listing

    for item in listing(store, specs, now):
        if item["name"] == name:
            return item
    raise UserError(f"schedule {name!r} cannot be shown: its stored declaration cannot be read")


def pause_schedule(store, specs, name, now):
    """Pause; returns (schedule document, changed). Unknown: NotFound; removed, or disabled in its
    file: Conflict."""
    from flowmetal.schedule.commands import pause_schedule as pause

    return _change_schedule(store, specs, name, now, pause)


def resume_schedule(store, specs, name, now):
    """Resume; as pause_schedule."""
    from flowmetal.schedule.commands import resume_schedule as resume

    return _change_schedule(store, specs, name, now, resume)


def _change_schedule(store, specs, name, now, change):
    _schedule_row(store, name)
    try:
        done = change(store, name, now)
    except UserError as e:
        raise _conflict(e) from None
    return {**schedule_json(store, specs, name, now), "changed": done["changed"]}


def trigger_schedule(store, root, name, now):
    """Start a run of the schedule now, recorded as a manual fire: {schedule, fire_time, nominal,
    run_id, run}. Unknown: NotFound; removed, or no run could be started: Conflict."""
    from flowmetal.schedule.commands import trigger_schedule as trigger

    _schedule_row(store, name)
    try:
        done = trigger(store, root, name, now)
    except UserError as e:
        raise _conflict(e) from None
    return {**done, "run": run_json(store.get_run(done["run_id"]))}


# --- tokens ---------------------------------------------------------------------------------

TOKEN_FIELDS = ("name", "scope", "created_at", "last_used_at")


def list_tokens(store):
    from flowmetal.server import tokens

    return {"tokens": [{k: row[k] for k in TOKEN_FIELDS} for row in tokens.list_tokens(store)]}


def create_token(store, name, scope, now):
    """{name, scope, created_at, last_used_at, token}: the token is in this answer only."""
    from flowmetal.server import tokens

    token = tokens.create_token(store, name, scope, now=now)
    row = next(r for r in tokens.list_tokens(store) if r["name"] == name)
    return {**{k: row[k] for k in TOKEN_FIELDS}, "token": token}


def revoke_token(store, name):
    from flowmetal.server import tokens

    tokens.revoke_token(store, name)
