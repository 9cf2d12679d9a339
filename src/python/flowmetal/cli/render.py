"""Rendering for the command line: the only module that imports rich."""

import datetime as dt
import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from flowmetal.codec import short
from flowmetal.durations import format_duration
from flowmetal.engine.runs import last_incarnation
from flowmetal.store.base import ENDED

# Not on a terminal (pipes, tests, logs): wide enough that tables do not wrap.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def when(ts):
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def waiting_text(run):
    w = json.loads(run["waiting_for"]) if run.get("waiting_for") else None
    if not w:
        return ""
    if w["kind"] == "signal":
        text = f"waiting for signal {w['name']}"
    elif w["kind"] == "children":
        text = f"waiting for {len(w['runs'])} child run(s)"
    else:
        text = f"waiting for {w['builtin'].replace('_', ' ')}"
    if w.get("until"):
        text += f" until {when(w['until'])}"
    return text


def first_line(text, width):
    """The first non-empty line of a multi-line text (an error's message), shortened."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return short(lines[0].strip(), width) if lines else ""


def runs_table(rows):
    table = Table(box=None, pad_edge=False)
    for col in ("id", "target", "state", "created", "duration", "detail"):
        table.add_column(col)
    for r in rows:
        duration = (r["ended_at"] or time.time()) - (r["started_at"] or r["created_at"])
        detail = waiting_text(r) if r["state"] == "waiting" else first_line(r["error"], 50)
        if r["schedule"]:
            detail = f"schedule {r['schedule']} " + detail
        table.add_row(r["id"], f"{r['file']}:{r['function']}", r["state"], when(r["created_at"]),
                      format_duration(duration) if r["started_at"] else "", detail)
    out.print(table)


def show_run(run, journal, children, decode=json.loads):
    out.print(f"[bold]run[/bold] {run['id']}  {run['file']}:{run['function']}  [bold]{run['state']}[/bold]")
    out.print(f"args: {run['args']}")
    if run.get("posargs"):
        out.print(f"positional args: {run['posargs']}")
    out.print(f"created {when(run['created_at'])}  started {when(run['started_at']) or 'not yet'}"
              f"  ended {when(run['ended_at']) or 'not yet'}  executions {run['executions']}")
    for label, key in (("parent", "parent_id"), ("continued from", "continued_from"),
                       ("continued as", "continued_as"), ("schedule", "schedule")):
        if run.get(key):
            out.print(f"{label}: {run[key]}")
    if run.get("forked_from"):
        out.print(f"forked from {run['forked_from']} at {run['forked_at']}")
    if run["state"] == "waiting":
        out.print(waiting_text(run))
    if run["result"] is not None:
        out.print(f"result: {run['result']}")
    if run["error"]:
        out.print("error:")
        out.print(run["error"], markup=False)
    if children:
        out.print(f"children ({len(children)}):")
        for c in children:
            out.print(f"  {c['id']}  {c['function']}  {c['state']}", markup=False)
    table = Table(title="journal", box=None, pad_edge=False, title_justify="left")
    for col in ("seq", "builtin", "args", "result", "duration", "marks"):
        table.add_column(col)
    for e in journal:
        duration = (e["ended_at"] - e["started_at"]) if e["ended_at"] else None
        if e["status"] == "started":
            result = "…" if e["builtin"] in ("sleep", "retry_delay", "wait_signal", "wait") else "(no result)"
        elif e["status"] == "failed":
            result = "error: " + (e["error"] or "")
        elif e["builtin"] == "secret":
            result = "***"
        elif e["builtin"] == "now":  # journaled as integer nanoseconds; show the seconds the program saw
            result = repr(int(e["result"]) / 1e9)
        else:
            result = short(decode(e["result"]) if e["result"] else None, 50)
        marks = []
        if e["reexecuted"]:
            marks.append("re-executed")
        if e["status"] == "started":
            marks.append("open")
        table.add_row(str(e["seq"]), e["builtin"], short(json.loads(e["args"]), 50), result,
                      format_duration(duration) if duration is not None else "", ", ".join(marks))
    out.print(table)


def print_log_line(row, prefix=""):
    click.echo(f"{when(row['time'])} {prefix}{row['line']}", err=False)


def worker_event(kind, run, detail=None):
    label = f"{run['id']} {run['file']}:{run['function']}"
    if kind == "start":
        click.echo(f"{when(time.time())} start {label}", err=True)
    elif kind == "end":
        click.echo(f"{when(time.time())} {detail:<9} {label}", err=True)
    else:
        click.echo(f"{when(time.time())} error {label}: {detail}", err=True)


class RunFollower:
    """Follows a foreground run: streams its tree's log to stderr, says when it waits,
    follows continue_as_new, and renders the end."""

    def __init__(self, store, run_id):
        self.store = store
        self.tip = run_id
        self.root = store.get_run(run_id)["root_id"]
        self.after = store.max_log_rowid()
        self.last_status = None

    def poll(self):
        """Print what is new; True once the run (and its continuations) ended."""
        for row in self.store.tree_logs(self.root, self.after):
            prefix = "" if row["run_id"] == self.tip else f"[{row['run_id']}] "
            click.echo(f"{prefix}{row['line']}", err=True)
            self.after = row["rowid"]
        run = last_incarnation(self.store, self.store.get_run(self.tip))
        if run["id"] != self.tip:
            click.echo(f"continued as new run {run['id']}", err=True)
            self.tip = run["id"]
        status = waiting_text(run) if run["state"] == "waiting" else run["state"]
        if status != self.last_status and run["state"] == "waiting":
            click.echo(status, err=True)
        self.last_status = status
        return run["state"] in ENDED

    def finish(self):
        run = self.store.get_run(self.tip)
        if run["state"] == "completed":
            click.echo(run["result"])
            return 0
        click.echo(f"run {run['id']} {run['state']}", err=True)
        if run["error"]:
            click.echo(run["error"], err=True)
        return 1


# --- flowmetal schedule -------------------------------------------------------


def _fire_text(fields):
    from flowmetal.schedule.daemon import iso_local

    ts = fields.get("fire_time")
    if ts is None:
        return "-"
    tz = fields.get("timezone") or "UTC"
    text = iso_local(ts, tz)
    if fields.get("through") not in (None, ts):
        text += " .. " + iso_local(fields["through"], tz)
    return text


def schedule_event(kind, **f):
    """One stderr line per scheduler event: fire, skip, miss, buffer, cancel, start, end,
    on_failure, schedule changes, load errors."""
    stamp = when(time.time())
    name = f.get("schedule") or "-"
    run = f" run {f['run_id']}" if f.get("run_id") else ""
    why = f" ({f['reason']})" if f.get("reason") else ""
    what = f"{name} {_fire_text(f)}" if f.get("schedule") else f.get("target", "")
    if kind in ("fire", "skip", "miss", "buffer"):
        line = f"{kind:<6} {name} {_fire_text(f)}{run}{why}"
    elif kind == "start":
        line = f"start  {what}{run}"
    elif kind == "end":
        line = f"end    {what}{run} {f.get('state')} in {format_duration(f.get('duration') or 0)}"
    elif kind == "cancel":
        line = f"cancel {name}{run}{why}"
    elif kind == "on_failure":
        follow = f" -> on_failure run {f['followup']}" if f.get("followup") else ""
        line = f"on_failure {name} {_fire_text(f)}{run} {f.get('state')}{follow}{why}"
    elif kind in ("added", "changed"):
        state = "" if f.get("enabled") else " (disabled)"
        nxt = f", next {_fire_text({'fire_time': f['next'], 'timezone': f.get('timezone')})}" if f.get("next") else ""
        line = f"{kind} schedule {name}: {f.get('cron')} {f.get('timezone')}{state}{nxt}"
    elif kind == "removed":
        line = f"removed schedule {name} (disabled; its history is kept)"
    elif kind == "load_error":
        kept = f.get("kept") or []
        keep = f"; keeping its last good schedules: {', '.join(kept)}" if kept else ""
        click.echo(f"{stamp} error  {f.get('file') or 'loading'} has errors{keep}", err=True)
        click.echo(f["message"], err=True)
        return
    elif kind == "load_ok":
        line = f"{f['file']} loads again"
    elif kind == "started":
        line = f"scheduler started: {f.get('schedules')} schedule(s), worker {f.get('owner')}"
    elif kind == "stopping":
        line = f"stopping: letting {f.get('running')} running run(s) finish their current effect " \
               f"(grace {format_duration(f.get('grace'))})"
    elif kind == "stopped":
        left = f.get("left") or []
        line = "stopped" + (f"; left resumable: {', '.join(left)}" if left else "")
    elif kind == "error":
        line = f"error  {f.get('message')}"
    else:
        line = f"{kind} " + " ".join(f"{k}={v}" for k, v in f.items())
    click.echo(f"{stamp} {line}", err=True)


def _last_fire_text(last):
    if not last:
        return ""
    outcome = last["action"]
    if last["action"] == "started":
        outcome = last.get("state") or "started"
    text = f"{last['fire_time']} {outcome}"
    if last["action"] != "started" and last.get("reason"):
        text += f" ({short(last['reason'], 40)})"
    return text


def schedules_table(rows):
    table = Table(box=None, pad_edge=False)
    for col in ("schedule", "status", "cron", "timezone", "next fires", "last fire", "started", "skipped",
                "missed", "target"):
        table.add_column(col)
    for r in rows:
        c = r["counts"]
        table.add_row(r["name"], r["status"], r["cron"], r["timezone"], "\n".join(r["next"]) or "-",
                      _last_fire_text(r["last_fire"]) or "-", str(c["started"]), str(c["skipped"]),
                      str(c["missed"]), f"{r['run']}  ({r['file']}:{r['line']})", )
    out.print(table)


def fire_preview(rows):
    """`schedule --dry-run`: one line per fire time, oldest first."""
    for r in rows:
        click.echo(f"{r['local_time']}  {r['schedule']}  {r['target']}  ({r['fire_time']})")


def prune_text(counts, dry_run):
    """One line: what `flowmetal prune` deleted (or would delete)."""
    parts = [f"{counts['journal']:,} journal entries", f"{counts['logs']:,} log lines",
             f"{counts['signals']:,} signals", f"{counts['fires']:,} schedule fires"]
    if not dry_run:
        parts += [f"{counts['sources']:,} source texts", f"{counts['blobs']:,} large results"]
    verb = "would delete" if dry_run else "deleted"
    return f"{verb} {counts['runs']:,} runs with {', '.join(parts)}"
