"""Fakes of the outside effects `sh` and `http`, at the level of the effect registry, and of
the workers that perform `task()` (their answers; testing/deferred.py delivers them).

The gate performs an outside effect by calling its registry entry's
`perform(args, ctx)`. Under test, the harness's gate calls `Fakes.perform(name)`
instead: the first fake registered for that builtin whose pattern matches the
call (a regular expression searched in the command, or in the URL) and that has
uses left (`times`) answers with a result of the same shape the real effect
returns, so `check`, `retry` (its outcomes and delays) and the journal work as
they do in production. Every call is recorded, matched or not; a call that no
fake matches fails (an EffectError names it) and the harness fails the test
naming the call.

A `task` fake (`t.mock_task(queue, result = None, error = None, ...)`) is matched
by the same rule against the task's queue name; it is the answer a worker of that
queue gives, delivered by testing/deferred.py.
"""

import json as jsonlib
import re
import shlex
from dataclasses import dataclass, field
from http import HTTPStatus

from flowmetal.engine.effects.http import _check_url, parse_retry_after
from flowmetal.errors import EffectError, UserError


@dataclass
class Fake:
    builtin: str
    pattern: str
    regex: re.Pattern
    answer: dict
    times: int | None
    method: str | None = None
    used: int = 0

    def left(self):
        return self.times is None or self.used < self.times


@dataclass
class Call:
    builtin: str
    run: str
    seq: int
    text: str  # the command, or "METHOD URL"
    args: dict
    result: dict | None = None
    fake: str | None = None  # the matching fake's pattern; None: unmatched

    def to_dict(self):
        return {"run": self.run, "seq": self.seq, "text": self.text, "matched": self.fake is not None,
                **{k: v for k, v in self.args.items() if k != "retry"}, "result": self.result}


HINTS = {"sh": "t.mock_sh(PATTERN, ...)", "http": "t.mock_http(URL_PATTERN, ...)",
         "task": "t.mock_task(QUEUE_PATTERN, result = ...)"}


def command_text(cmd):
    return cmd if isinstance(cmd, str) else shlex.join(str(a) for a in cmd)


@dataclass
class Fakes:
    fakes: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    unmatched: list = field(default_factory=list)  # Calls no fake answered (the test fails on them)

    def add(self, builtin, pattern, answer, times=None, method=None):
        if not isinstance(pattern, str) or not pattern:
            raise UserError(f"t.mock_{builtin}(): the pattern must be a non-empty string")
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise UserError(f"t.mock_{builtin}(): pattern {pattern!r} is not a regular expression: {e}") from None
        if times is not None and (not isinstance(times, int) or times < 1):
            raise UserError(f"t.mock_{builtin}(): times must be a positive number or None")
        self.fakes.append(Fake(builtin, pattern, regex, answer, times, method.upper() if method else None))

    def find(self, builtin, text, method=None):
        """The first fake of `builtin` with uses left that matches `text` (used up by one), or None."""
        for fake in self.fakes:
            if fake.builtin == builtin and fake.left() and fake.regex.search(text) \
                    and (fake.method is None or fake.method == method):
                fake.used += 1
                return fake
        return None

    def perform(self, name):
        """The perform function of builtin `name` under test."""
        return {"sh": self._sh, "http": self._http}.get(name, self._unknown(name))

    def _unknown(self, name):
        def perform(args, ctx):
            raise EffectError(f"{name}() has no fake in test mode")
        return perform

    def _match(self, builtin, text, args, ctx, method=None):
        call = Call(builtin, ctx.run_id, ctx.seq, text, dict(args))
        self.calls.append(call)
        fake = self.find(builtin, text, method)
        if fake is not None:
            call.fake = fake.pattern
            return call, fake
        self.unmatched.append(call)
        raise EffectError(f"no fake matches {builtin}({text!r}) (add {HINTS[builtin]})")

    def _sh(self, args, ctx):
        call, fake = self._match("sh", command_text(args["cmd"]), args, ctx)
        code = fake.answer["exit_code"]
        error = None if code == 0 else f"exit code {code}"
        call.result = {"exit_code": code, "signal": None, "stdout": fake.answer["stdout"],
                       "stderr": fake.answer["stderr"], "ok": code == 0, "duration": 0.0,
                       "timed_out": False, "error": error}
        return call.result

    def _http(self, args, ctx):
        method = (args.get("method") or "GET").upper()
        _check_url(args["url"], ctx)  # a URL the real effect refuses is refused here too
        call, fake = self._match("http", args["url"], args, ctx, method)
        call.text = f"{method} {args['url']}"
        a = fake.answer
        status = a["status"]
        if status is None:  # a connection failure
            call.result = {"status": None, "headers": {}, "body": "", "json": None, "ok": False,
                           "error": "connection refused (fake)", "duration": 0.0, "timed_out": False,
                           "truncated": False, "retry_after": None}
            return call.result
        headers = {str(k).lower(): str(v) for k, v in (a["headers"] or {}).items()}
        body, value = a["body"], a["json"]
        if value is not None:
            body = body if body is not None else jsonlib.dumps(value, separators=(",", ":"))
            headers.setdefault("content-type", "application/json")
        elif body is not None:
            try:
                value = jsonlib.loads(body)
            except ValueError:
                value = None
        ok = status < 400
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        after = parse_retry_after(headers.get("retry-after"), ctx.clock.now() if ctx.clock else None) \
            if status in (429, 503) else None
        call.result = {"status": status, "headers": headers, "body": body or "", "json": value, "ok": ok,
                       "error": None if ok else f"HTTP {status} {reason}".rstrip(), "duration": 0.0,
                       "timed_out": False, "truncated": False, "retry_after": after}
        return call.result
