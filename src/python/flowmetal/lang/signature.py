"""A top-level function's parameters, read from its `def`, so that the arguments of a
run are checked before the run exists.

starlark-pyo3 gives no way to ask a function value for its parameters, and calling
the function to find out would run its body. So the parameters are read from the
source: the `def NAME(...)` header at the top level of the file is cut out (brackets,
strings and comments respected) and parsed with Python's own parser, whose grammar
for a parameter list is a superset of Starlark's (names, `name = default`, type
annotations, `*`, `*args`, `**kwargs`, `/`). Only names and whether each has a
default are used; default values are never evaluated.

When the header cannot be read (a shape this does not understand), `signature`
returns None and nothing is checked here: Starlark's own binding still refuses
bad arguments when the run calls the function.
"""

import ast
import re
from dataclasses import dataclass

from flowmetal.errors import UserError


@dataclass(frozen=True)
class Signature:
    name: str
    positional_only: tuple  # before "/": cannot be passed by name
    params: tuple  # positional or keyword
    keyword_only: tuple  # after "*" or "*args"
    required: frozenset  # names without a default
    varargs: str = None
    varkw: str = None

    def by_name(self):
        return (*self.params, *self.keyword_only)

    def problems(self, kwargs, npositional=0):
        """What is wrong with calling the function with `npositional` positional
        arguments and the keyword arguments `kwargs`: a list of messages, [] if nothing."""
        out = []
        positional = (*self.positional_only, *self.params)
        if npositional > len(positional) and not self.varargs:
            out.append(f"{self.name}() takes {len(positional)} positional argument(s), got {npositional}")
        filled = set(positional[:npositional])
        accepted = set(self.by_name())
        unknown = []
        for key in kwargs:
            if key in filled:
                out.append(f"{self.name}() got argument {key!r} twice")
            elif key in self.positional_only and not self.varkw:
                out.append(f"{self.name}() takes {key!r} only by position")
            elif key not in accepted and not self.varkw:
                unknown.append(key)
        if unknown:
            listed = ", ".join(self.by_name()) or "none"
            out.append(f"{self.name}() has no parameter{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(repr(u) for u in unknown)} (its parameters: {listed})")
        missing = [p for p in (*positional, *self.keyword_only)
                   if p in self.required and p not in filled and (p not in kwargs or p in self.positional_only)]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            out.append(f"{self.name}() is missing the required argument{'s' if len(missing) > 1 else ''} {names}")
        return out


def signature(text, function):
    """The Signature of the top-level `def function(...)` in `text`, or None when there is
    no such def or its header cannot be read. The last definition wins, as when the file runs."""
    header = None
    for m in re.finditer(rf"^def[ \t]+{re.escape(function)}[ \t]*\(", text, re.M):
        header = _parameters(text, m.end())
    if header is None:
        return None
    try:
        tree = ast.parse(f"def {function}({header}): pass")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    a = tree.body[0].args
    positional = [*a.posonlyargs, *a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    required = {p.arg for p, d in zip(positional, defaults) if d is None}
    required |= {p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None}
    return Signature(
        name=function,
        positional_only=tuple(p.arg for p in a.posonlyargs),
        params=tuple(p.arg for p in a.args),
        keyword_only=tuple(p.arg for p in a.kwonlyargs),
        required=frozenset(required),
        varargs=a.vararg.arg if a.vararg else None,
        varkw=a.kwarg.arg if a.kwarg else None,
    )


def _parameters(text, start):
    """The text between the "(" before `start` and its matching ")", or None."""
    depth, i, n = 1, start, len(text)
    while i < n:
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "'\"":
            quote = text[i:i + 3] if text[i:i + 3] in ("'''", '"""') else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n" and len(quote) == 1:
                    return None
                i += 1
            i += len(quote)
            continue
        i += 1
    return None


def check_arguments(texts, file, function, kwargs, npositional=0):
    """Raise UserError (one message naming the file and every problem) when `function`
    of `file` cannot be called with these arguments; `texts` maps file names to sources."""
    sig = signature(texts.get(file, ""), function)
    if sig is None:
        return
    problems = sig.problems(kwargs, npositional)
    if problems:
        raise UserError(f"{file}: " + "; ".join(problems))
