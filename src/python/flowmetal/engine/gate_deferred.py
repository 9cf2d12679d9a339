"""The gate's deferred effects: `task`, `callback`, `wait_callback`, whose result is
delivered from outside the process (engine/deferred.py, doc/architecture.md,
"Deferred effects")."""


from flowmetal.codec import canonical, loads
from flowmetal.engine.effects.registry import BuiltinError, Deferred
from flowmetal.errors import UserError
from flowmetal.model import WaitingFor


class DeferredEffects:
    """Mixed into Gate: the deferred effects (they use the gate's journal methods)."""

    # --- deferred effects: a result delivered from outside ----------------------

    def _deferred(self, eff, args):
        """Record the effect as started, with the `deferred` row of what it waits for, in one
        transaction; then take the result someone completed (engine/deferred.py), give up at
        the deadline, or suspend holding nothing until complete_effect wakes the run.
        The journaled value is {"ok", "value", "error", "attempts"}; with check (the
        default) a failed one fails the run."""
        spec = eff.perform(args, self._context(self.seq + 1))
        if not isinstance(spec, Deferred):
            raise TypeError(f"{eff.name}: a deferred effect returned {spec!r}")
        if not spec.wait:
            return self._create_deferred(eff, args, spec)
        seq, rec = self._next(eff.name, args, eff)
        if spec.target is not None:
            if "_new" in rec:
                deadline = None if spec.timeout is None else self.clock.now() + spec.timeout
                self._record(seq, eff.name, rec, "started", data={"deferred": spec.detail, "deadline": deadline})
                value = self._await_deferred(eff, seq, deadline, spec, row_seq=spec.target)
            elif rec["status"] == "started":
                value = self._await_deferred(eff, seq, loads(rec["data"])["deadline"], spec, row_seq=spec.target)
            else:
                value = self._decode(rec)
            return value
        if "_new" in rec:
            deadline = None if spec.timeout is None else self.clock.now() + spec.timeout
            with self._transaction():
                self._record(seq, eff.name, rec, "started", data={"deferred": spec.detail, "deadline": deadline})
                self.store.insert_deferred({
                    "run_id": self.run_id, "seq": seq, "builtin": eff.name, "queue": spec.detail.get("queue"),
                    "detail": canonical(spec.detail), "deadline": deadline, "created_at": self.clock.now()})
            value = self._await_deferred(eff, seq, deadline, spec)
        elif rec["status"] == "started":
            value = self._await_deferred(eff, seq, loads(rec["data"])["deadline"], spec)
        else:
            value = self._decode(rec)
        if not value["ok"] and args.get("check", True):
            raise BuiltinError(f"{eff.name}() failed: {value['error']}")
        return value

    def _create_deferred(self, eff, args, spec):
        """callback(): record it and its row (with the hash of its URL token) in one
        transaction, and return it with its URL, derived again at every execution."""
        from flowmetal.engine import deferred

        seq, rec = self._next(eff.name, args, eff)
        try:
            secret = deferred.store_secret(self.store)
        except (UserError, OSError) as e:  # no secret to derive the URL from: the user's setup, said at the call
            raise BuiltinError(f"callback(): {e}") from None
        token = deferred.callback_token(secret, self.run_id, seq)
        if token not in self.secret_names:  # masked wherever the run's text is stored (args of http()...)
            self.secrets.append(token)
            self.secret_names[token] = f"CALLBACK_{seq}"
        if "_new" in rec:
            deadline = None if spec.timeout is None else self.clock.now() + spec.timeout
            value = {"id": f"{self.run_id}:{seq}", "seq": seq, "name": spec.detail.get("callback"),
                     "approval": spec.detail.get("approval", False), "deadline": deadline,
                     "base": deferred.public_url()}  # (journaled: replay gives the same URL)
            with self._transaction():
                self._record(seq, eff.name, rec, "completed", result=value)
                self.store.insert_deferred({
                    "run_id": self.run_id, "seq": seq, "builtin": eff.name, "queue": None,
                    "detail": canonical(spec.detail), "deadline": deadline, "created_at": self.clock.now(),
                    "token_hash": deferred.token_hash(token)})
        else:
            value = self._decode(rec)
        base = value.pop("base")
        return {**value, "url": f"{base}/callbacks/{token}"}

    def _await_deferred(self, eff, seq, deadline, spec, row_seq=None):
        """Journal entry `seq` waits for the deferred row at `row_seq` (default: its own)."""
        row_seq = row_seq or seq
        while True:
            value, deadline = self._take_deferred(eff, seq, deadline, spec, row_seq)
            if value is not None:
                return value
            self._suspend(WaitingFor(kind="effect", seq=row_seq, builtin=eff.name, detail=spec.detail,
                                     until=deadline), deadline)

    def _take_deferred(self, eff, seq, deadline, spec, row_seq):
        """(value, deadline): the value of the deferred row at `row_seq` when it has one (then
        recorded at `seq`), else None; the deadline, the row's own if it is sooner."""
        with self._transaction():
            row = self.store.get_deferred(self.run_id, row_seq)
            if row is None:
                raise BuiltinError(f"{eff.name}(): no callback at journal position {row_seq}")
            now = self.clock.now()
            if row["deadline"] is not None:
                deadline = row["deadline"] if deadline is None else min(deadline, row["deadline"])
            if row["state"] == "waiting" and deadline is not None and now >= deadline:
                if row["deadline"] is None or now < row["deadline"] or \
                        self.store.expire_deferred(self.run_id, row_seq, now):
                    row = {**row, "state": "expired"}
                else:
                    row = self.store.get_deferred(self.run_id, row_seq)  # (completed first)
            if row["state"] != "waiting":
                if row["state"] == "completed":
                    ok = row["error"] is None
                    value = {"ok": ok, "value": loads(row["result"]) if ok else None, "error": row["error"]}
                else:
                    value = {"ok": False, "value": None, "error": "timed out"
                             + (f" after {spec.timeout:g}s" if spec.timeout is not None else "")}
                value["attempts"] = row.get("attempts") or 1  # (a task's claims; engine/tasks.py)
                self._complete(seq, value, reexecuted=bool(row.get("lost")))  # a lease expired: done again
                return value, deadline
        return None, deadline
