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
"""

import re
from ast import literal_eval as ast_literal
from functools import lru_cache
from pathlib import Path

import starlark as sl

from flowmetal.codec import content_hash
from flowmetal.durations import parse_duration
from flowmetal.errors import BuiltinError, LoadError, UserError
from flowmetal.lang.diagnostics import PRELUDE, Diagnostic, from_starlark_error
from flowmetal.lang.safe import StarlarkPanic, enlarge_thread_stacks, guard, nesting_problem, on_big_stack
from flowmetal.lang.workspace import LabelError, require_star, resolve_label

# Threads started from now on (worker pools, the scheduler's loader) get a big native stack.
enlarge_thread_stacks()

DIALECT = sl.Dialect.extended()
GLOBALS = sl.Globals.extended_by([
    sl.LibraryExtension.StructType,
    sl.LibraryExtension.Json,
    sl.LibraryExtension.Typing,
    sl.LibraryExtension.Map,
    sl.LibraryExtension.Filter,
    sl.LibraryExtension.Partial,
])
PRELUDE_TEXT = (Path(__file__).parent / "builtins.star").read_text(encoding="utf-8")
# Every public builtin the prelude defines (the names a user file sees).
BUILTIN_NAMES = tuple(re.findall(r"^def ([a-z]\w*)\(", PRELUDE_TEXT, re.M))
EFFECTS = tuple(sorted(set(re.findall(r'_effect\("(\w+)"', PRELUDE_TEXT))))
_TOP_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.M)
_SCHEDULE_CALL = re.compile(r"^[ \t]*schedule\s*\(", re.M)
# Effects without arguments, bound as host callables over the prelude's definitions
# (which stay, for typechecking and as their documentation): host name -> builtin.
DIRECT_EFFECTS = {"_now_ns": "now", "random": "random", "uuid": "uuid"}
_UNKNOWN_NAME = re.compile(r"Variable `(\w+)` not found")


class PhaseError(UserError):
    """A builtin was called in the wrong phase (an effect while loading, a declaration while executing)."""


class SourceError(UserError):
    """A source text refused before starlark sees it (nested too deeply); carries its diagnostic."""

    def __init__(self, diagnostic):
        super().__init__(diagnostic.render())
        self.diagnostic = diagnostic


@lru_cache(maxsize=1)
def prelude_ast():
    return sl.parse(PRELUDE, PRELUDE_TEXT, DIALECT)


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

    def __init__(self, sources, effect=None, log=None, lenient=False):
        """`lenient` (for `flowmetal check`): after an unknown name, report it and evaluate
        again with that name defined as None, so the problems after it are found too."""
        self.sources = sources
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

    # --- host callables ---------------------------------------------------

    def _effect(self, name, args):
        if self.phase != "execution":
            raise PhaseError(
                f"{name}() is an effect and cannot be called while the file is loading "
                f"(at its top level); call it inside a function that a run executes"
            )
        return self.effect_handler(name, args)

    def _direct(self, name):
        """An effect without arguments as a host callable: the same call of the gate as
        `_effect` makes, without the prelude function's frame and argument dict (whose
        JSON crossing costs more than the rest of the call)."""
        def call(*args, **kwargs):
            if args or kwargs:
                raise BuiltinError(f"{name}() takes no arguments")
            if self.phase != "execution":
                return self._effect(name, {})  # raises PhaseError
            return self.effect_handler(name, {})

        return call

    def _pure(self, name, args):
        if name == "duration":
            try:
                return parse_duration(args["value"], "duration()")
            except ValueError as e:
                raise BuiltinError(str(e)) from None
        if name == "retry_policy":
            from flowmetal.engine.retry import RetryPolicy

            try:
                return RetryPolicy.from_args(args).to_dict()
            except ValueError as e:
                raise BuiltinError(f"retry_policy(): {str(e).removeprefix('retry_policy: ')}") from None
        raise BuiltinError(f"unknown helper {name}")

    def _log(self, text):
        self.log_handler(text)

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
        module = on_big_stack(self._load, name)
        if module is None:
            raise LoadError(f"{name} failed to load", self.diagnostics)
        return module

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
        try:
            ast = parse(name, text)
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
            module.add_callable("_effect", self._effect)
            module.add_callable("_pure", self._pure)
            module.add_callable("_log", self._log)
            module.add_callable("_declare", self._declarer(name))
            loader = sl.FileLoader(lambda label: self._load_for(name, label))
            mark = len(self.declarations)
            try:
                guard(sl.eval, module, prelude_ast(), GLOBALS)
                for host_name, builtin in DIRECT_EFFECTS.items():  # straight to the gate: the hottest builtins
                    module.add_callable(host_name, self._direct(builtin))
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
