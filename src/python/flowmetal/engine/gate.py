"""The journal gate: the one function every effect of a run passes through.

`Gate.effect(name, args)` is bound as `_effect` in the run's Starlark
modules. For the call at journal position `seq`:

- replay (the journal has an entry at `seq`): the builtin and the digest of
  its arguments must match the entry, else the run fails with a
  NondeterminismError naming the position, the recorded and the actual call.
  A completed entry returns its recorded result without performing anything.
- live (no entry yet): the call is recorded, performed, and its result
  recorded, before the program sees it.

Pure effects (`now`, `random`, `uuid`, `env`) are performed and recorded in
one commit: if the process dies first, nobody saw the value. Outside effects
(`sh`, `http`) are recorded as started before they run, so a crash mid-effect
is seen on resume: the effect is performed again and marked re-executed.
Waits (`sleep`, retry delays, `wait_signal`, `wait`) record what they wait
for; when it has not happened yet, the gate *suspends* the run: it stops the
evaluation and the runner parks the run as `waiting` with a wake time. A
later execution replays up to the wait and asks again.

Retries of `sh` and `http` are separate journal entries, but one logical
call: every attempt carries the idempotency key of the first,
`<run id>:<sequence of the first attempt>`, so a server (or command) can tell a
retry from a new request.

Results are recorded as canonical JSON, and the program sees them as replay
will (keys in the same order), so that what it computes from them is the same
in every execution. A result larger than BLOB_THRESHOLD is moved to the blob
table (stored once by content hash); a dict result moves each large field to a
blob of its own and keeps the small ones in the entry, so the same body
fetched twice is stored once although its headers and duration differ.

Effect implementations never see the store; only this module writes the journal.
"""

import json
import math
import os
import random as _random
import threading
import uuid as _uuid

from flowmetal.codec import canonical, digest, loads
from flowmetal.durations import parse_duration
from flowmetal.engine.effects import EffectContext
from flowmetal.errors import EffectError, NondeterminismError, UserError
from flowmetal.store.base import ENDED

# Results whose JSON is larger than this are stored once in the blob table and
# referenced from the journal entry (see doc/effects.md).
BLOB_THRESHOLD = 64 * 1024
# Fields of a blobbed dict result whose JSON is at least this long get a blob of their own.
BLOB_FIELD = 1024
# A wait whose remaining time is at most this is waited in place instead of suspending.
INLINE_WAIT = 1.0


# Digests of recent (builtin, canonical arguments): a loop calling now() computes one.
_DIGESTS = {}


class BuiltinError(UserError):
    """A builtin was called with a bad argument, or its outcome fails the run (check = True)."""


class Stop(Exception):
    """Raised through the Starlark evaluation to end it on purpose; `Gate.stop` says why."""


def _check(cond, builtin, message):
    if not cond:
        raise BuiltinError(f"{builtin}(): {message}")


def _is_str_dict(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _duration(builtin, arg, value, allow_none=True):
    if value is None and allow_none:
        return None
    try:
        return parse_duration(value, f"argument {arg}")
    except ValueError as e:
        raise BuiltinError(f"{builtin}(): {e}") from None


def validate(name, args):
    """Check a builtin's arguments; errors name the builtin and the argument."""
    if name == "env":
        _check(isinstance(args["name"], str) and args["name"], name, "argument name must be a non-empty string")
    elif name == "secret":
        _check(isinstance(args["name"], str) and args["name"], name, "argument name must be a non-empty string")
    elif name == "sleep":
        _duration(name, "duration", args["duration"], allow_none=False)
    elif name == "sh":
        cmd = args["cmd"]
        _check(isinstance(cmd, str) or (isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd)),
               name, f"argument cmd must be a string or a non-empty list of strings, got {type(cmd).__name__}")
        _check(_is_str_dict(args["env"]), name, "argument env must be a dict of strings to strings")
        _check(args["cwd"] is None or isinstance(args["cwd"], str), name, "argument cwd must be a string or None")
        _check(args["stdin"] is None or isinstance(args["stdin"], str), name, "argument stdin must be a string or None")
        _check(isinstance(args["check"], bool), name, "argument check must be True or False")
        _duration(name, "timeout", args["timeout"])
    elif name == "http":
        _check(isinstance(args["url"], str) and args["url"], name, "argument url must be a non-empty string")
        _check(isinstance(args["method"], str), name, "argument method must be a string")
        _check(_is_str_dict(args["headers"]), name, "argument headers must be a dict of strings to strings")
        _check(args["body"] is None or isinstance(args["body"], str), name, "argument body must be a string or None")
        _check(args["json"] is None or args["body"] is None, name, "give json or body, not both")
        _check(isinstance(args["check"], bool), name, "argument check must be True or False")
        _duration(name, "timeout", args["timeout"])
    elif name == "wait_signal":
        _check(isinstance(args["name"], str) and args["name"], name, "argument name must be a non-empty string")
        _duration(name, "timeout", args["timeout"])
    elif name == "wait":
        handles = args["handles"]
        _check(all(isinstance(h, str) for h in handles), name,
               "argument handles must be a handle returned by spawn() or a list of them")
        _duration(name, "timeout", args["timeout"])


def _marker_like(value):
    """A dict whose keys all start with "$" could be read back as an encoding marker."""
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def mask(value, secrets):
    """`value` (a string, or JSON containing strings) with every secret replaced by ***."""
    if not secrets:
        return value
    if isinstance(value, str):
        for s in secrets:
            if s:
                value = value.replace(s, "***")
        return value
    if isinstance(value, list):
        return [mask(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: mask(v, secrets) for k, v in value.items()}
    return value


def decode_result(store, text):
    """The value of a journal result as the program saw it (resolving blob references)."""
    value = loads(text)
    if not _marker_like(value):
        return value
    if set(value) == {"$blob"}:
        return loads(store.get_blob(value["$blob"]))
    if set(value) == {"$value"}:
        return value["$value"]
    if set(value) == {"$parts", "$value"}:
        whole = dict(value["$value"])
        for key, digest_ in value["$parts"].items():
            whole[key] = loads(store.get_blob(digest_))
        return {key: whole[key] for key in sorted(whole)}
    return value


class Gate:
    """Per-execution state of one run: its journal cursor and what stopped it."""

    def __init__(self, store, run, owner, clock, hooks):
        self.store = store
        self.run = run
        self.run_id = run["id"]
        self.owner = owner
        self.clock = clock
        self.hooks = hooks  # engine callbacks: spawn_child(gate, seq, ref, args, kwargs), child_results(ids)
        self.entries = store.journal(self.run_id)
        self.seq = 0
        self.log_n = 0
        self.secrets = []
        self.stop = None  # ("suspend", waiting_for, wake_at) | ("continue", kwargs) | ("cancel", state) | ("lost",) | ("interrupt",)
        self.cancel = threading.Event()  # set from outside: cancel, timeout, interrupt
        self.drain = threading.Event()  # set from outside: stop before the next effect (graceful shutdown)
        self.cancel_reason = None
        self.replayed = 0

    # --- the gate -----------------------------------------------------------

    def effect(self, name, args):
        try:
            if args:  # (now, random and uuid have none: the hot path)
                validate(name, args)
            return getattr(self, "_" + name)(args)
        except (EffectError, OSError) as e:
            raise BuiltinError(mask(f"{name}(): {e}", self.secrets)) from None
        except BuiltinError as e:
            masked = mask(str(e), self.secrets)  # an argument quoted in the message may hold a secret
            if masked != str(e):
                raise BuiltinError(masked) from None
            raise

    def _next(self, name, args):
        """Advance to the next journal position; return (seq, recorded entry or None)."""
        self._check_stop()
        self.seq += 1
        self.log_n = 0
        stored = canonical(mask(args, self.secrets)) if args else "{}"
        key = (name, stored)
        dig = _DIGESTS.get(key)
        if dig is None:
            if len(_DIGESTS) > 4096:
                _DIGESTS.clear()
            dig = _DIGESTS[key] = digest(name + ":" + stored)
        if self.seq <= len(self.entries):
            rec = self.entries[self.seq - 1]
            if rec["builtin"] != name or rec["digest"] != dig:
                error = NondeterminismError(
                    self.run_id, self.seq,
                    f"{rec['builtin']}({rec['args']})", f"{name}({stored})",
                )
                self.stop = ("nondeterminism", str(error))
                raise Stop(str(error))
            self.replayed += 1
            return self.seq, rec
        return self.seq, {"_new": True, "args": stored, "digest": dig}

    def _record(self, seq, name, fresh, status, result=None, error=None, data=None, started=None):
        now = self.clock.now()
        entry = {
            "run_id": self.run_id, "seq": seq, "builtin": name, "args": fresh["args"], "digest": fresh["digest"],
            "status": status, "result": self._encode(result) if status == "completed" else None,
            "error": error, "data": None if data is None else canonical(data),
            "started_at": started or now, "ended_at": None if status == "started" else now,
        }
        if not self.store.insert_journal(entry, self.owner):
            self._lost()
        self.entries.append(entry)
        return entry

    def _complete(self, seq, result, reexecuted=False, error=None, status="completed"):
        fields = {"status": status, "result": self._encode(result) if status == "completed" else None,
                  "error": error, "ended_at": self.clock.now()}
        if reexecuted:
            fields["reexecuted"] = 1
        if not self.store.update_journal(self.run_id, seq, self.owner, **fields):
            self._lost()
        self.entries[seq - 1].update(fields)

    def _encode(self, result):
        """The journal text of a result: its canonical JSON, or a reference to blobs.

        Encodings are dicts whose keys all start with "$": {"$blob": hash} (the
        whole result), {"$parts": {field: hash}, "$value": small fields}, and
        {"$value": v} for a result that would otherwise look like one of them.
        """
        if type(result) is int:
            return str(result)  # the hot path of now(): what canonical() gives, faster
        if type(result) is float and math.isfinite(result):
            return repr(result)  # and of random()
        if result is None:
            return "null"
        value = mask(result, self.secrets)
        text = canonical(value)
        if len(text) <= BLOB_THRESHOLD:
            return canonical({"$value": value}) if _marker_like(value) else text
        if isinstance(value, dict):
            parts, small = {}, {}
            for key, field in value.items():
                field_text = canonical(field)
                if len(field_text) >= BLOB_FIELD:
                    parts[key] = self.store.put_blob(field_text, self.clock.now())
                else:
                    small[key] = field
            doc = canonical({"$parts": parts, "$value": small})
            if len(doc) <= BLOB_THRESHOLD:
                return doc
        return canonical({"$blob": self.store.put_blob(text, self.clock.now())})

    def _decode(self, text):
        return decode_result(self.store, text)

    def _check_stop(self, drain=True):
        """Raise Stop if the run must stop here. `drain` (a graceful shutdown) stops the run
        before its next effect, never in the middle of one: the effect in progress finishes
        and is recorded; only `cancel` interrupts it."""
        if self.stop is not None:
            raise Stop(self.stop[0])
        if drain and self.drain.is_set():
            self.stop = ("interrupt",)
            raise Stop("drain")
        if self.cancel.is_set():
            reason = self.cancel_reason or "cancelled"
            self.stop = ("interrupt",) if reason == "interrupt" else ("cancel", reason)
            raise Stop(reason)

    def _lost(self):
        self.stop = ("lost",)
        raise Stop("lost ownership of the run")

    def _suspend(self, waiting_for, wake_at):
        self.stop = ("suspend", waiting_for, wake_at)
        raise Stop("suspend")

    # --- logs ---------------------------------------------------------------

    def log(self, text, stream="log"):
        """A `print`/`log` line: keyed by journal position so replay does not repeat it."""
        self.log_n += 1
        self.store.add_logs(self.run_id, [(self.seq, self.log_n, self.clock.now(), stream, mask(text, self.secrets))])

    def _effect_log(self, seq):
        counter = iter(range(1_000_000, 2_000_000))

        def log(stream, line):
            self.store.add_logs(self.run_id, [(seq, next(counter), self.clock.now(), stream, line)])

        return log

    def _context(self, seq, key_seq=None):
        """The effect's context; its idempotency key is `<run id>:<key_seq or seq>`."""
        return EffectContext(run_id=self.run_id, seq=key_seq or seq, cancelled=self.cancel,
                             secrets=tuple(self.secrets), log=self._effect_log(seq))

    # --- pure effects: one commit ------------------------------------------

    def _pure(self, name, args, compute):
        seq, rec = self._next(name, args)
        if "_new" not in rec:
            return self._decode(rec["result"])
        value = compute()
        self._record(seq, name, rec, "completed", result=value)
        return value

    def _now(self, args):
        return self._pure("now", args, self.clock.now_ns)

    def _random(self, args):
        return self._pure("random", args, _random.random)

    def _uuid(self, args):
        return self._pure("uuid", args, lambda: str(_uuid.uuid4()))

    def _env(self, args):
        return self._pure("env", args, lambda: os.environ.get(args["name"], args["default"]))

    def _secret(self, args):
        """Read at every execution, never journaled: the entry holds the name only."""
        name = args["name"]
        seq, rec = self._next("secret", args)
        value = os.environ.get(name)
        path = os.environ.get(name + "_FILE")
        if value is None and path:
            try:
                with open(path, encoding="utf-8") as f:
                    value = f.read().rstrip("\n")
            except OSError as e:
                raise BuiltinError(f"secret(): cannot read {name}_FILE={path}: {e.strerror}") from None
        if value is None:
            raise BuiltinError(f"secret(): environment variable {name} (or {name}_FILE) is not set")
        if value and value not in self.secrets:
            self.secrets.append(value)
        if "_new" in rec:
            self._record(seq, "secret", rec, "completed", result=None, data={"masked": True})
        return value

    # --- outside effects: started, performed, completed ---------------------

    def _outside(self, name, args, module, key_seq=None):
        seq, rec = self._next(name, args)
        if "_new" in rec:
            self._record(seq, name, rec, "started")
            reexecuted = False
        elif rec["status"] == "started":
            reexecuted = True  # the process died while it ran: at-least-once
        elif rec["status"] == "failed":
            raise BuiltinError(f"{name}(): {rec['error']}")  # as the first execution did
        else:
            return seq, self._decode(rec["result"])
        ctx = self._context(seq, key_seq)
        try:
            result = module.perform(args, ctx)
        except EffectError as e:  # can never succeed as written: record the error, then fail the run
            self._complete(seq, None, reexecuted=reexecuted, error=mask(str(e), self.secrets), status="failed")
            raise
        self._check_stop(drain=False)  # cancelled or interrupted while it ran: the entry stays open
        self._complete(seq, result, reexecuted=reexecuted)
        return seq, loads(canonical(result))  # as replay returns it (sorted keys)

    def _with_retry(self, name, args, module):
        from flowmetal.engine import retry as retry_mod

        policy = None
        if args.get("retry") is not None:
            try:
                policy = retry_mod.RetryPolicy.from_args(args["retry"])
            except (ValueError, TypeError) as e:
                raise BuiltinError(f"{name}(): argument retry: {str(e).removeprefix('retry_policy: ')}") from None
        attempt = 1
        first_seq = None  # every attempt sends the idempotency key of the first
        call = {k: v for k, v in args.items() if k != "retry"}
        while True:
            attempt_args = call if attempt == 1 else {**call, "attempt": attempt}
            seq, result = self._outside(name, attempt_args, module, key_seq=first_seq)
            first_seq = first_seq or seq
            if result.get("ok") or policy is None or attempt >= policy.attempts:
                break
            if not retry_mod.should_retry(policy, module.outcomes(result), module.RETRY_ON):
                break
            delay = retry_mod.delay(policy, attempt, f"{self.run_id}:{first_seq}", module.retry_after(result))
            self._timer("retry_delay", {"after": name, "attempt": attempt, "delay": delay}, delay)
            attempt += 1
        if not result.get("ok") and args.get("check", True):
            detail = result.get("error") or "failed"
            tail = (result.get("stderr") or "").strip()[-500:]
            suffix = f" after {attempt} attempts" if attempt > 1 else ""
            raise BuiltinError(f"{name}() failed{suffix}: {detail}" + (f"\nstderr: {tail}" if tail else ""))
        return result

    def _sh(self, args):
        from flowmetal.engine.effects import sh

        return self._with_retry("sh", args, sh)

    def _http(self, args):
        from flowmetal.engine.effects import http

        return self._with_retry("http", args, http)

    # --- waits ----------------------------------------------------------------

    def _wait_until(self, until):
        """Wait in place when the wait is short, else suspend. Returns when `until` has passed."""
        remaining = until - self.clock.now()
        if remaining > INLINE_WAIT:
            return False
        if remaining > 0:
            self.cancel.wait(remaining)
            self._check_stop()
        return True

    def _timer(self, name, args, seconds):
        seq, rec = self._next(name, args)
        if "_new" in rec:
            until = self.clock.now() + seconds
            rec = self._record(seq, name, rec, "started", data={"until": until})
        elif rec["status"] != "started":
            return None
        until = loads(rec["data"])["until"]
        if self._wait_until(until):
            self._complete(seq, None)
            return None
        self._suspend({"kind": "timer", "builtin": name, "until": until}, until)

    def _sleep(self, args):
        return self._timer("sleep", args, parse_duration(args["duration"]))

    def _open_wait(self, name, args):
        """The journal position of a wait with an optional `timeout`.

        Returns (seq, done, value, deadline): `done` with the recorded value when the
        wait already ended; else the deadline (None: no timeout), recorded on first call."""
        seq, rec = self._next(name, args)
        if "_new" in rec:
            timeout = _duration(name, "timeout", args["timeout"])
            deadline = None if timeout is None else self.clock.now() + timeout
            self._record(seq, name, rec, "started", data={"deadline": deadline})
            return seq, False, None, deadline
        if rec["status"] != "started":
            return seq, True, self._decode(rec["result"]), None
        return seq, False, None, loads(rec["data"])["deadline"]

    def _wait_signal(self, args):
        name = args["name"]
        seq, done, value, deadline = self._open_wait("wait_signal", args)
        if done:
            return value
        with self.store.transaction():
            signal = self.store.take_signal(self.run_id, name, seq)
            if signal is not None:
                payload = json.loads(signal["payload"])
                self._complete(seq, payload)
                return payload
        if deadline is not None and self._wait_until(deadline):
            self._complete(seq, None)
            return None
        self._suspend({"kind": "signal", "name": name, "until": deadline}, deadline)

    def _spawn(self, args):
        seq, rec = self._next("spawn", args)
        if "_new" not in rec:
            return self._decode(rec["result"])
        with self.store.transaction():
            child_id = self.hooks.spawn_child(self, seq, args["function"], args["args"], args["kwargs"])
            self._record(seq, "spawn", rec, "completed", result=child_id)
        return child_id

    def _wait(self, args):
        handles = args["handles"]
        seq, done, value, deadline = self._open_wait("wait", args)
        if done:
            return value
        results = self.hooks.child_results(self, handles)
        pending = [r["id"] for r in results if r["state"] not in ENDED]
        timed_out = deadline is not None and self.clock.now() >= deadline
        if pending and not timed_out:
            self._suspend({"kind": "children", "runs": pending, "until": deadline}, deadline)
        value = [{k: r[k] for k in ("error", "ok", "state", "value")} for r in results]  # replay's order
        self._complete(seq, value)
        return value

    def _continue_as_new(self, args):
        seq, rec = self._next("continue_as_new", args)
        if "_new" in rec:
            self._record(seq, "continue_as_new", rec, "completed", result=None)
        self.stop = ("continue", args["kwargs"])
        raise Stop("continue_as_new")
