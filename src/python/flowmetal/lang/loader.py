"""Loading `.star` files into Starlark modules, in two phases (SPEC section 2).

A `Program` loads one file and everything it loads. Each module is evaluated
with the prelude (`builtins.star`) first, so every builtin is a Starlark
function over a few host callables:

- `_effect(name, args)`: the only way to reach the outside world. While
  loading it is an error; while executing it is handed to the journal gate.
- `_pure(name, args)`: pure helpers (`duration`, `retry_policy`).
- `_declare(kind, args)`: declarations (`schedule`), allowed only while loading.
- `_log(text)`: `print` and `log`, captured instead of written by Rust to stdout.

Every source text a program reads is kept in `texts`, so a run can pin it.

The prelude is evaluated once per process and its frozen module is loaded into
each module; modules are cached by content; the host callables find their
Program through a thread-local (lang/prelude.py).
"""

import re
from ast import literal_eval as ast_literal
from functools import lru_cache

import starlark as sl

from flowmetal.codec import content_hash
from flowmetal.durations import parse_duration
from flowmetal.errors import BuiltinError, LoadError, UserError
from flowmetal.lang.diagnostics import Diagnostic, from_starlark_error
from flowmetal.lang.prelude import (  # noqa: F401 (re-exported: the loader's surface)
    _PRELUDE_LOADER, BUILTIN_NAMES, HOST, DIALECT, DIRECT_EFFECTS, EFFECTS, GLOBALS, MODULE_EVALUATIONS,
    PRELUDE_EVALUATIONS, PRELUDE_TEXT, LoadedModule, _builtins_load, _cache_module, _cached_module, _running,
    frozen_prelude, prelude_ast,
)
from flowmetal.lang.safe import StarlarkPanic, enlarge_thread_stacks, guard, nesting_problem, on_big_stack
from flowmetal.lang.workspace import LabelError, require_star, resolve_label

# Threads started from now on (worker pools, the scheduler's loader) get a big native stack.
enlarge_thread_stacks()

_TOP_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.M)
_SCHEDULE_CALL = re.compile(r"^[ \t]*schedule\s*\(", re.M)
_UNKNOWN_NAME = re.compile(r"Variable `(\w+)` not found")


class PhaseError(UserError):
    """A builtin was called in the wrong phase (an effect while loading, a declaration while executing)."""


class SourceError(UserError):
    """A source text refused before starlark sees it (nested too deeply); carries its diagnostic."""

    def __init__(self, diagnostic):
        super().__init__(diagnostic.render())
        self.diagnostic = diagnostic




@lru_cache(maxsize=512)
def _parse(name, text_hash, text):
    problem = nesting_problem(text)
    if problem is not None:
        line, col, message = problem
        lines = text.splitlines()
        raise SourceError(Diagnostic(name, line, col, message, lines[line - 1] if line <= len(lines) else ""))
    return guard(sl.parse, name, text, DIALECT)


def parse(name, text):
    """Parse user code: refused with a SourceError when nested deeper than safe.MAX_DEPTH,
    raises StarlarkError for a syntax error, StarlarkPanic for a panic of starlark's."""
    return _parse(name, content_hash(text), text)


def top_level_functions(text):
    return set(_TOP_DEF.findall(text))


_CANNOT_LOAD = re.compile(r"cannot load ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def _at_label(diagnostic, text):
    """Starlark places an error of a load() at the statement; point at the label instead."""
    m = _CANNOT_LOAD.match(diagnostic.message)
    if not m:
        return diagnostic
    try:
        label = ast_literal(m[1])
    except ValueError:
        return diagnostic
    lines = text.splitlines(keepends=True)
    start = sum(len(ln) for ln in lines[:diagnostic.line - 1]) + diagnostic.col - 1
    found = re.compile("[\"']" + re.escape(label) + "[\"']").search(text, start)
    if not found:
        return diagnostic
    line = text.count("\n", 0, found.start()) + 1
    col = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    source = text.splitlines()[line - 1]
    return Diagnostic(diagnostic.file, line, col, diagnostic.message, source, diagnostic.severity)


class Declaration:
    """A raw declaration made while loading: kind, arguments, and where."""

    def __init__(self, kind, args, file, line, col):
        self.kind, self.args, self.file, self.line, self.col = kind, args, file, line, col


class Program:
    """One root file and the files it loads, evaluated into frozen modules."""

    def __init__(self, sources, effect=None, log=None, lenient=False, expose_effect=False):
        """`lenient` (for `flowmetal check`): after an unknown name, report it and evaluate
        again with that name defined as None, so the problems after it are found too.
        `expose_effect` (for `flowmetal test`, whose `t` object is Starlark appended to the
        test file): the file's own code may call `_effect` and `_pure` too, as the prelude does."""
        self.sources = sources
        self.expose_effect = expose_effect
        self.lenient = lenient
        self.effect_handler = effect
        self.log_handler = log or (lambda text: None)
        self.phase = "loading"
        self.modules = {}
        self.texts = {}
        self.declarations = []
        self.diagnostics = []
        self._stack = []
        self._failed = set()
        self.stubbed = set()  # files that loaded only with unknown names stubbed (lenient mode)
        self._unreadable = {}  # file name -> why it cannot be read (missing, a link out of the root...)
        self._declarers = {}  # file name -> its `_declare` (counts its schedule() calls)
        self._frames = []  # per file being evaluated: [its loads [(name, module)], whether it logged or declared]

    # --- host callables ---------------------------------------------------

    def _effect(self, name, args):
        if self.phase != "execution":
            raise PhaseError(
                f"{name}() is an effect and cannot be called while the file is loading "
                f"(at its top level); call it inside a function that a run executes"
            )
        return self.effect_handler(name, args)

    def _direct_call(self, name, args, kwargs):
        """An effect without arguments as a host callable: the same call of the gate as
        `_effect` makes, without the prelude function's frame and argument dict (whose
        JSON crossing costs more than the rest of the call)."""
        if args or kwargs:
            raise BuiltinError(f"{name}() takes no arguments")
        if self.phase != "execution":
            return self._effect(name, {})  # raises PhaseError
        return self.effect_handler(name, {})

    def _pure(self, name, args):
        if name == "duration":
            try:
                return parse_duration(args["value"], "duration()")
            except ValueError as e:
                raise BuiltinError(str(e)) from None
        if name == "retry_policy":
            from flowmetal.retry import RetryPolicy

            try:
                return RetryPolicy.from_args(args).to_dict()
            except ValueError as e:
                raise BuiltinError(f"retry_policy(): {str(e).removeprefix('retry_policy: ')}") from None
        raise BuiltinError(f"unknown helper {name}")

    def _log(self, text):
        if self._frames:  # printed while loading: the module is not cached (a later run prints again)
            self._frames[-1][1] = True
        self.log_handler(text)

    def _declare(self, kind, args):
        """`_declare` of the prelude: a declaration of the file being evaluated on this thread."""
        file = self._stack[-1] if self._stack else ""
        if self._frames:
            self._frames[-1][1] = True
        if file not in self._declarers:
            self._declarers[file] = self._declarer(file)
        return self._declarers[file](kind, args)

    def _declarer(self, file):
        """The `_declare` callable for one file. A declaration's line is that of the k-th
        `schedule(` call in the text (found once per file): the host cannot see the
        caller's position. Calls made from a loop share the line of the last one found."""
        text = self.texts.get(file, "")
        sites, pos, line = [], 0, 1
        for m in _SCHEDULE_CALL.finditer(text):
            line += text.count("\n", pos, m.start())
            pos = m.start()
            sites.append((line, len(m.group()) - len(m.group().lstrip()) + 1))
        sites = sites or [(1, 1)]
        count = [0]

        def declare(kind, args):
            if self.phase != "loading":
                raise PhaseError(f"{kind}() is a declaration: call it at the top level of a file, not while a run executes")
            line, col = sites[min(count[0], len(sites) - 1)]
            count[0] += 1
            self.declarations.append(Declaration(kind, args, file, line, col))
            return None

        return declare

    # --- loading ----------------------------------------------------------

    def load(self, name):
        """Load `name` (a workspace file name) and return its frozen module.

        Raises LoadError carrying every diagnostic found on the way. Runs on a thread
        with a big native stack (safe.on_big_stack).
        """
        require_star(name)
        module = on_big_stack(self._load_here, name)
        if module is None:
            raise LoadError(f"{name} failed to load", self.diagnostics)
        return LoadedModule(self, module)

    def _load_here(self, name):
        with _running(self):
            return self._load(name)

    def _load(self, name):
        if name in self.modules:
            return self.modules[name]
        if name in self._failed:
            return None
        self._stack.append(name)
        try:
            return self._evaluate(name)
        finally:
            self._stack.pop()

    def _evaluate(self, name):
        try:
            text = self.sources.read(name)
        except LabelError as e:
            if len(self._stack) > 1:  # loaded by another file: reported at its load() (see _load_for)
                self._failed.add(name)
                self._unreadable[name] = str(e)
            else:
                self._fail(name, Diagnostic(name, 1, 1, str(e)))
            return None
        self.texts[name] = text
        text_hash = content_hash(text)
        key = None if self.lenient else (name, text_hash)
        hit = key and _cached_module(key)
        if hit and all(self._load(dep) is module for dep, module in hit[1]):
            self.modules[name] = hit[0]  # evaluated before, from this very text and these very modules
            return hit[0]
        self._frames.append([[], False])
        try:
            frozen = self._evaluate_text(name, text, text_hash)
        finally:
            loads, impure = self._frames.pop()
        if frozen is not None and key and not impure and name not in self.stubbed:
            _cache_module(key, frozen, tuple(loads))
        return frozen

    def _evaluate_text(self, name, text, text_hash):
        MODULE_EVALUATIONS[0] += 1
        try:
            ast = _parse(name, text_hash, text)
        except SourceError as e:
            self._fail(name, e.diagnostic)
            return None
        except sl.StarlarkError as e:
            self._fail(name, from_starlark_error(str(e), self._read, name))
            return None
        except StarlarkPanic as e:
            self._fail(name, Diagnostic(name, 1, 1, f"{e} (while parsing this file)"))
            return None
        stubs = []
        while True:
            module = sl.Module()
            loader = sl.FileLoader(lambda label: self._load_for(name, label))
            mark = len(self.declarations)
            try:
                guard(sl.eval, module, _builtins_load(), GLOBALS, _PRELUDE_LOADER)  # the builtins, evaluated once
                if self.expose_effect:
                    for host_name in ("_effect", "_pure"):
                        module.add_callable(host_name, HOST[host_name])
                if stubs:
                    sl.eval(module, sl.parse("<stubs>", "".join(f"{n} = None\n" for n in stubs), DIALECT), GLOBALS)
                guard(sl.eval, module, ast, GLOBALS, loader)
                break
            except StarlarkPanic as e:
                self._fail(name, Diagnostic(name, 1, 1, f"{e} (while loading this file)"))
                del self.declarations[mark:]
                return None
            except sl.StarlarkError as e:
                diagnostic = _at_label(from_starlark_error(str(e), self._read, name), text)
                self._fail(name, diagnostic)
                del self.declarations[mark:]
                unknown = _UNKNOWN_NAME.match(diagnostic.message)
                if not (self.lenient and unknown and len(stubs) < 50 and unknown[1] not in stubs):
                    return None  # (its declarations were dropped above: they come from a failed file)
                stubs.append(unknown[1])
        try:
            frozen = guard(module.freeze)
        except StarlarkPanic as e:
            self._fail(name, Diagnostic(name, 1, 1, f"{e} (while loading this file)"))
            return None
        if stubs:
            self.stubbed.add(name)
        self.modules[name] = frozen
        return frozen

    def _load_for(self, from_name, label):
        """The FileLoader callback: resolve a label as written in `from_name`."""
        name = resolve_label(label, from_name)
        if name in self._stack:
            cycle = self._stack[self._stack.index(name):] + [name]
            raise LoadError("load cycle: " + " -> ".join(cycle))
        module = self._load(name)
        if module is not None and self._frames:
            self._frames[-1][0].append((name, module))
        if module is None:
            if name in self._unreadable:
                raise LoadError(f"cannot load {label!r}: {self._unreadable[name]}")
            raise LoadError(f"cannot load {label!r}: {name} has errors (see its own messages)")
        return module

    def _fail(self, name, diagnostic):
        self._failed.add(name)
        # One message per place: in lenient mode a stubbed name fails again where it is used.
        if diagnostic.key()[:3] not in {d.key()[:3] for d in self.diagnostics}:
            self.diagnostics.append(diagnostic)

    def _read(self, name):
        if name in self.texts:
            return self.texts[name]
        return self.sources.read(name)

    def close(self):
        """Drop the modules. They hold our callables and we hold them: a cycle through
        Rust that Python's collector cannot see, so without this every run leaks its heap."""
        self.modules.clear()
        self.effect_handler = None
        self.log_handler = None

    # --- execution --------------------------------------------------------

    def function_exists(self, file, function):
        text = self.texts.get(file)
        return text is not None and function in top_level_functions(text)

    def call(self, file, function, kwargs, options=None):
        """Call a top-level function of a loaded file with keyword arguments."""
        module = self.load(file)
        if not self.function_exists(file, function):
            raise UserError(f"{file} has no top-level function {function!r}")
        self.phase = "execution"
        # call_with, not call: call() reserves the keyword "name" for itself.
        return guard(module.call_with, options or sl.EvalOptions(), function, **kwargs).value
