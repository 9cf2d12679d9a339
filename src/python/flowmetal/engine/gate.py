"""The journal gate: the one function every effect of a run passes through.

`Gate.effect(name, args)` is bound as `_effect` in the run's Starlark
modules. For the call at journal position `seq`:

- replay (the journal has an entry at `seq`): the builtin and the digest of
  its arguments must match the entry, else the run fails with a
  NondeterminismError naming the position, the recorded and the actual call.
  A completed entry returns its recorded result without performing anything.
- live (no entry yet): the call is recorded, performed, and its result
  recorded, before the program sees it.

Pure effects (`now`, `random`, `uuid`, `env`) and log lines are held in
memory and committed with the gate's next write (engine/gate_held.py: the
next outside effect's started row, wait, spawn, or the execution's end; or
when the group reaches its bound): if the process dies first, nobody saw the
values, and the next execution makes them again. Outside effects
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

The gate is four modules: this one (dispatch, the journal cursor, records and
completions, stops, logs, secrets, pure, outside and control effects),
gate_waits.py (the waits), gate_deferred.py (deferred effects), gate_encoding.py
(results as journal text, blobs) and gate_held.py (the grouped commit).

Every builtin is declared once in the effect registry (effects/registry.py),
with its kind; `effect()` dispatches on the kind. Effect implementations never
see the store; only this module writes the journal.

Digests: rule 2 (runs created by this release) digests only the arguments a
call passed with a non-default value; rule 1 (runs recorded by 0.1.0, whose
row has no digest version) digests what 0.1.0 did. See doc/architecture.md.

Secrets: results are stored with every secret masked, and the spans masked
are kept in the entry's data so that replay gives the program the very value
it saw live (doc/effects.md, "Secrets").
"""

import threading
from contextlib import contextmanager

from flowmetal import __version__
from flowmetal.codec import canonical, content_hash, digest, loads
from flowmetal import retry as retry_mod
from flowmetal.engine.effects import EffectContext
from flowmetal.engine.effects.registry import (
    CONTROL, DEFERRED, OUTSIDE, PURE, WAIT, BuiltinError, ContinueAsNew, SpawnChild, lookup, recorded_args, REGISTRY,
)
from flowmetal.engine.effects import callbacks, children, pure, tasks, waits  # noqa: F401  (they register their builtins)
from flowmetal.engine.effects.secrets import from_markers, mask, refill, to_markers
from flowmetal.engine.gate_deferred import DeferredEffects
from flowmetal.engine.gate_encoding import (  # noqa: F401 (re-exported: the gate's API)
    BLOB_FIELD, BLOB_THRESHOLD, decode_result, encode_result,
)
from flowmetal.engine.gate_held import Held, Refused
from flowmetal.engine.gate_waits import INLINE_WAIT, Waits  # noqa: F401 (re-exported)
from flowmetal.errors import EffectError, NondeterminismError
from flowmetal.model import Cancel, Continue, Interrupt, Lost, Nondeterminism, Suspend

__all__ = ["BuiltinError", "Gate", "Stop", "decode_result", "mask", "run_stamp"]

# The digest rule of runs this release creates (doc/architecture.md, "Digests").
DIGEST_VERSION = 2

# Digests of recent (builtin, canonical arguments): a loop calling now() computes one.
_DIGESTS = {}


def run_stamp():
    """Columns a new run records: the release and prelude that started it, and its digest rule."""
    from flowmetal.lang.loader import PRELUDE_TEXT

    return {"flowmetal_version": __version__, "prelude_digest": content_hash(PRELUDE_TEXT)[:16],
            "digest_version": DIGEST_VERSION}


class Stop(Exception):
    """Raised through the Starlark evaluation to end it on purpose; `Gate.stop` says why."""


class Gate(Waits, DeferredEffects):
    """Per-execution state of one run: its journal cursor and what stopped it."""

    def __init__(self, store, run, owner, clock, hooks):
        self.store = store
        self.run = run
        self.run_id = run["id"]
        self.owner = owner
        self.clock = clock
        self.hooks = hooks  # engine callbacks: spawn_child(gate, seq, ref, args, kwargs), child_results(ids)
        self.entries = store.journal(self.run_id)
        # Runs recorded before digest versions were (0.1.0) have none: rule 1, and replay also
        # accepts a rule 2 digest for them (a row that lost its stamp; see doc/architecture.md).
        self.digest_rule = run.get("digest_version") or (1 if self.entries else DIGEST_VERSION)
        self._either_rule = not run.get("digest_version") and bool(self.entries)
        self.seq = 0
        self.log_n = 0
        self.secrets = []  # secret values, masked wherever the run's text is stored
        self.secret_names = {}  # value -> NAME
        self.stop = None  # a flowmetal.model stop reason: Suspend, Continue, Cancel, Lost, Interrupt, ...
        self.cancel = threading.Event()  # set from outside: cancel, timeout, interrupt
        self.drain = threading.Event()  # set from outside: stop before the next effect (graceful shutdown)
        self.cancel_reason = None
        self.replayed = 0
        self.park = None  # park(waiting_for, wake_at): set by the runner when the worker keeps waits warm
        # pure entries and logs not yet written; the run's writes change only rows of its tree
        self.held = Held(store, self.run_id, owner, clock, tree=run.get("root_id") or run["id"])
        self._pure_ctx = EffectContext(run_id=self.run_id, seq=0, cancelled=self.cancel, clock=clock, run=run)
        self._kinds = {PURE: self._pure, OUTSIDE: self._with_retry, WAIT: self._wait, DEFERRED: self._deferred,
                       CONTROL: self._control}

    # --- the gate -----------------------------------------------------------

    def effect(self, name, args):
        try:
            eff = REGISTRY.get(name) or lookup(name)
            if args and eff.validate is not None:  # (now, random and uuid have none: the hot path)
                eff.validate(args)
            return self._kinds[eff.kind](eff, args)
        except (EffectError, OSError) as e:
            raise BuiltinError(mask(f"{name}(): {e}", self.secrets)) from None
        except BuiltinError as e:
            masked = mask(str(e), self.secrets)  # an argument quoted in the message may hold a secret
            if masked != str(e):
                raise BuiltinError(masked) from None
            raise

    def _stored(self, name, args, eff, rule):
        """(recorded argument text, digest) of a call under digest `rule`."""
        if args:
            if eff is not None:
                args = recorded_args(eff, args, rule)
            stored = canonical(mask(args, self.secrets))
        else:
            stored = "{}"
        key = (name, stored)
        dig = _DIGESTS.get(key)
        if dig is None:
            if len(_DIGESTS) > 4096:
                _DIGESTS.clear()
            dig = _DIGESTS[key] = digest(name + ":" + stored)
        return stored, dig

    def _next(self, name, args, eff=None):
        """Advance to the next journal position; return (seq, recorded entry or None)."""
        self._check_stop()
        if self.held.since is not None and self.held.overdue():
            self.flush()
        self.seq += 1
        self.log_n = 0
        stored, dig = self._stored(name, args, eff, self.digest_rule)
        if self.seq <= len(self.entries):
            rec = self.entries[self.seq - 1]
            if rec["digest"] != dig and self._either_rule and args and eff is not None:
                stored, dig = self._stored(name, args, eff, DIGEST_VERSION)
            if rec["builtin"] != name or rec["digest"] != dig:
                error = NondeterminismError(
                    self.run_id, self.seq,
                    f"{rec['builtin']}({rec['args']})", f"{name}({stored})",
                )
                self.stop = Nondeterminism(str(error))
                raise Stop(str(error))
            self.replayed += 1
            return self.seq, rec
        return self.seq, {"_new": True, "args": stored, "digest": dig}

    def _record(self, seq, name, fresh, status, result=None, error=None, data=None, started=None, hold=False):
        """Write a new entry (with what is held before it, in one transaction), or with `hold`
        (a pure effect) keep it with them until the next write."""
        now = self.clock.now()
        text = None
        if status == "completed":
            text, spans = self._encode_spans(result)
            if spans:
                data = {**(data or {}), "secrets": spans}
        entry = {
            "run_id": self.run_id, "seq": seq, "builtin": name, "args": fresh["args"], "digest": fresh["digest"],
            "status": status, "result": text, "error": error, "data": None if data is None else canonical(data),
            "started_at": started or now, "ended_at": None if status == "started" else now,
        }
        self.entries.append(entry)
        if hold:
            if self.held.add_entry(entry):
                self.flush()
        elif not self.held:
            if not self.store.insert_journal(entry, self.owner):
                self._lost()
        else:
            self._commit_held(lambda: None if self.store.insert_journal(entry, self.owner) else "lost")
        return entry

    def flush(self):
        """Commit what the gate holds (the entries of pure effects, log lines) now."""
        if self.held:
            self._commit_held(None)

    def commit_with(self, change):
        """`change()` (a lifecycle state change) in one transaction with what is held; its
        value, or "lost". The runner ends, suspends and releases runs through this."""
        return self.held.commit_with(change)

    @contextmanager
    def _transaction(self):
        """A transaction of the gate's writes (all of them rows of the run's tree: its journal,
        its signals, its deferred rows, its children) that also carries what is held."""
        with self.store.transaction(tree=self.held.tree):
            taken = None
            if self.held:
                try:
                    taken = self.held.take()
                except Refused:
                    self._lost()
            try:
                yield
            except BaseException:
                if taken is not None:
                    self.held.restore(taken)  # (rolled back: still held, for the execution's end)
                raise

    def _commit_held(self, then):
        try:
            return self.held.commit(then)
        except Refused:
            self._lost()

    def _complete(self, seq, result, reexecuted=False, error=None, status="completed"):
        fields = {"status": status, "result": None, "error": error, "ended_at": self.clock.now()}
        if status == "completed":
            fields["result"], spans = self._encode_spans(result)
            if spans:
                fields["data"] = canonical({**(loads(self.entries[seq - 1]["data"]) or {}), "secrets": spans})
        if reexecuted:
            fields["reexecuted"] = 1
        if self.held:  # (not in practice: the entry's started row committed what was held)
            self._commit_held(lambda: None if self.store.update_journal(self.run_id, seq, self.owner, **fields)
                              else "lost")
        elif not self.store.update_journal(self.run_id, seq, self.owner, **fields):
            self._lost()
        self.entries[seq - 1].update(fields)

    def _encode(self, result):
        return self._encode_spans(result)[0]

    def _encode_spans(self, result):
        """(journal text of a result, secret spans): see gate_encoding.encode_result."""
        return encode_result(self.store, self.clock, self.secret_names, result)

    def _decode(self, rec):
        """A recorded result (an entry, or its result text) as the program saw it: secrets
        masked for storage are put back."""
        if isinstance(rec, str):
            return decode_result(self.store, rec)
        value = decode_result(self.store, rec["result"])
        data = rec.get("data")
        if data and '"secrets"' in data:
            value = refill(value, loads(data)["secrets"], self._secret_value)
        return value

    def _secret_value(self, name):
        for value, known in self.secret_names.items():
            if known == name:
                return value
        return self.read_secret(name)

    def _check_stop(self, drain=True):
        """Raise Stop if the run must stop here. `drain` (a graceful shutdown) stops the run
        before its next effect, never in the middle of one: the effect in progress finishes
        and is recorded; only `cancel` interrupts it."""
        if self.stop is not None:
            raise Stop(type(self.stop).__name__.lower())
        if drain and self.drain.is_set():
            self.stop = Interrupt()
            raise Stop("drain")
        if self.cancel.is_set():
            reason = self.cancel_reason or "cancelled"
            self.stop = Interrupt() if reason == "interrupt" else Cancel(reason)
            raise Stop(reason)

    def _lost(self):
        self.stop = Lost()
        raise Stop("lost ownership of the run")

    def _suspend(self, waiting_for, wake_at):
        """Suspend the run at a wait. Without `park` the evaluation stops (a later execution
        replays to here). With it (a worker's warm waits, engine/warm.py) the run is suspended
        in the database and this thread blocks; it returns when the run was claimed again
        here, and the caller asks its wait again, as replay would."""
        if self.park is None:
            self.stop = Suspend(waiting_for, wake_at)
            raise Stop("suspend")
        self.park(waiting_for, wake_at)  # (raises Stop when evicted or lost)
        self._check_stop()

    def rebind(self, run):
        """The run's row as a later claim gave it (a warm wait continued in place)."""
        self.run = run
        self._pure_ctx = EffectContext(run_id=self.run_id, seq=0, cancelled=self.cancel, clock=self.clock, run=run)

    # --- logs ---------------------------------------------------------------

    def log(self, text, stream="log"):
        """A `print`/`log` line: keyed by journal position so replay does not repeat it."""
        self.log_n += 1
        if self.held.add_log((self.seq, self.log_n, self.clock.now(), stream, mask(text, self.secrets))) \
                or self.held.overdue():
            self.flush()

    def _effect_log(self, seq):
        counter = iter(range(1_000_000, 2_000_000))

        def log(stream, line):
            self.store.add_logs(self.run_id, [(seq, next(counter), self.clock.now(), stream, mask(line, self.secrets))])

        return log

    def _context(self, seq, key_seq=None):
        """The effect's context; its idempotency key is `<run id>:<key_seq or seq>`."""
        return EffectContext(run_id=self.run_id, seq=key_seq or seq, cancelled=self.cancel,
                             secrets=tuple(self.secrets), log=self._effect_log(seq), clock=self.clock, run=self.run)

    # --- secrets --------------------------------------------------------------

    def read_secret(self, name):
        """The value of secret NAME from this process's environment; from now on it is masked."""
        value = lookup("secret").perform({"name": name}, self._pure_ctx)
        if value not in self.secret_names:
            self.secrets.append(value)
            self.secret_names[value] = name
        return value

    def resolve_args(self, value):
        """A run's stored arguments as its program receives them: secrets passed by name are read."""
        return from_markers(value, self.read_secret)

    def _for_another_run(self, value):
        """`value` as another run stores it: secrets by name (markers), never by value."""
        return to_markers(value, self.secret_names)

    # --- pure effects: held, committed with the next write ----------------------

    def _pure(self, eff, args):
        name = eff.name
        seq, rec = self._next(name, args, eff)
        if eff.secret:  # read at every execution, never journaled: the entry holds the name only
            value = self.read_secret(args["name"])
            if "_new" in rec:
                self._record(seq, name, rec, "completed", result=None, data={"masked": True}, hold=True)
            return value
        if "_new" not in rec:
            return self._decode(rec)
        value = eff.perform(args, self._pure_ctx)
        self._record(seq, name, rec, "completed", result=value, hold=True)
        return value

    # --- outside effects: started, performed, completed ---------------------

    def _outside(self, eff, args, key_seq=None):
        name = eff.name
        seq, rec = self._next(name, args, eff)
        if "_new" in rec:
            self._record(seq, name, rec, "started")
            reexecuted = False
        elif rec["status"] == "started":
            reexecuted = True  # the process died while it ran: at-least-once
        elif rec["status"] == "failed":
            raise BuiltinError(f"{name}(): {rec['error']}")  # as the first execution did
        else:
            return seq, self._decode(rec)
        ctx = self._context(seq, key_seq)
        try:
            result = eff.perform(args, ctx)
        except EffectError as e:  # can never succeed as written: record the error, then fail the run
            self._complete(seq, None, reexecuted=reexecuted, error=mask(str(e), self.secrets), status="failed")
            raise
        self._check_stop(drain=False)  # cancelled or interrupted while it ran: the entry stays open
        self._complete(seq, result, reexecuted=reexecuted)
        return seq, loads(canonical(result))  # as replay returns it (sorted keys)

    def _with_retry(self, eff, args):
        name = eff.name
        if not eff.retry:
            return self._outside(eff, args)[1]
        policy = None
        if args.get("retry") is not None:
            try:
                policy = retry_mod.RetryPolicy.from_args(args["retry"])
            except (ValueError, TypeError) as e:
                raise BuiltinError(f"{name}(): argument retry: {str(e).removeprefix('retry_policy: ')}") from None
        attempt = 1
        first_seq = None  # every attempt sends the idempotency key of the first
        call = {k: v for k, v in args.items() if k != "retry"}  # the policy is not part of the call
        while True:
            attempt_args = call if attempt == 1 else {**call, "attempt": attempt}
            seq, result = self._outside(eff, attempt_args, key_seq=first_seq)
            first_seq = first_seq or seq
            if result.get("ok") or policy is None or attempt >= policy.attempts:
                break
            if not retry_mod.should_retry(policy, eff.outcomes(result), eff.retry_on):
                break
            delay = retry_mod.delay(policy, attempt, f"{self.run_id}:{first_seq}", eff.retry_after(result))
            self._timer("retry_delay", {"after": name, "attempt": attempt, "delay": delay}, delay)
            attempt += 1
        if not result.get("ok") and args.get("check", True):
            detail = result.get("error") or "failed"
            tail = (result.get("stderr") or "").strip()[-500:]
            suffix = f" after {attempt} attempts" if attempt > 1 else ""
            raise BuiltinError(f"{name}() failed{suffix}: {detail}" + (f"\nstderr: {tail}" if tail else ""))
        return result

    # --- control: the run tree ----------------------------------------------

    def _control(self, eff, args):
        request = eff.perform(args, self._pure_ctx)
        seq, rec = self._next(eff.name, args, eff)
        if isinstance(request, SpawnChild):
            if "_new" not in rec:
                return self._decode(rec)
            with self._transaction():
                child_id = self.hooks.spawn_child(self, seq, request.ref, self._for_another_run(request.args),
                                                  self._for_another_run(request.kwargs))
                self._record(seq, eff.name, rec, "completed", result=child_id)
            return child_id
        if isinstance(request, ContinueAsNew):
            if "_new" in rec:
                self._record(seq, eff.name, rec, "completed", result=None)
            self.stop = Continue(self._for_another_run(request.kwargs))
            raise Stop("continue_as_new")
        raise TypeError(f"{eff.name}: a control effect returned {request!r}")
