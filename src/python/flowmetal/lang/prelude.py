"""The prelude (`builtins.star`), evaluated and frozen once per process, and the loaded
modules of the process, cached by content (issue 17: a third of a one-effect run's cost
was evaluating the prelude into every module again).

Every module gets its builtins by one `load()` of the frozen prelude, evaluated into the
module before the user's file (so line numbers stay the user's; names starting with `_`
stay the prelude's). The prelude's host callables (`_effect`, `_pure`, `_log`,
`_declare`, the direct effects) are shared by every run of the process, so each finds
the run it acts for in a thread-local: the Program loading or executing on the calling
thread (`_running`), set by `Program.load` and by calls into the module it returns
(`LoadedModule`). A Starlark evaluation runs on one thread from start to end (a blocked
callable blocks that thread), so the thread names the run.

A frozen module is immutable (a global list cannot be appended to), so one may serve any
number of runs: `_MODULES` keeps the last MODULE_CACHE_SIZE, keyed by (file name, content
hash), with the modules it loaded. A hit is used only if each of those loads gives the very
same module again (so a changed file it loads evaluates it anew), and only modules whose
evaluation printed and declared nothing are kept (a print or `schedule()` while loading is
seen by every Program that loads the file).
"""

import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import starlark as sl

from flowmetal.errors import UserError
from flowmetal.lang.diagnostics import PRELUDE
from flowmetal.lang.safe import guard

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
# Effects without arguments, bound as host callables over the prelude's definitions
# (which stay, for typechecking and as their documentation): host name -> builtin.
DIRECT_EFFECTS = {"_now_ns": "now", "random": "random", "uuid": "uuid"}


@lru_cache(maxsize=1)
def prelude_ast():
    return sl.parse(PRELUDE, PRELUDE_TEXT, DIALECT)


# --- the prelude, once per process --------------------------------------------------

_CURRENT = threading.local()  # .program: the Program loading or executing on this thread
_PRELUDE_LOCK = threading.Lock()
_prelude = []  # [FrozenModule], once evaluated
PRELUDE_LABEL = "@flowmetal//prelude"  # what each module's builtins are loaded from (not a user label)
PRELUDE_EVALUATIONS = [0]  # how many times this process evaluated the prelude (tests: once)


def _current():
    program = getattr(_CURRENT, "program", None)
    if program is None:  # (a bug of ours: every load and call sets it)
        raise UserError("a builtin was called with no run loading or executing on this thread")
    return program


@contextmanager
def _running(program):
    """`program` is the one the prelude's host callables act for, on this thread, in the block."""
    before = getattr(_CURRENT, "program", None)
    _CURRENT.program = program
    try:
        yield
    finally:
        _CURRENT.program = before


def _host_direct(name):
    def call(*args, **kwargs):
        return _current()._direct_call(name, args, kwargs)

    return call


HOST = {
    "_effect": lambda name, args: _current()._effect(name, args),
    "_pure": lambda name, args: _current()._pure(name, args),
    "_log": lambda text: _current()._log(text),
    "_declare": lambda kind, args: _current()._declare(kind, args),
}


def frozen_prelude():
    """The prelude evaluated and frozen, once per process; its host callables route every
    call to the Program running on the calling thread (`_running`)."""
    if _prelude:
        return _prelude[0]
    with _PRELUDE_LOCK:
        if not _prelude:
            module = sl.Module()
            for name, fn in HOST.items():
                module.add_callable(name, fn)
            guard(sl.eval, module, prelude_ast(), GLOBALS)
            for host_name, builtin in DIRECT_EFFECTS.items():  # straight to the gate: the hottest builtins
                module.add_callable(host_name, _host_direct(builtin))
            PRELUDE_EVALUATIONS[0] += 1
            _prelude.append(guard(module.freeze))
    return _prelude[0]


@lru_cache(maxsize=1)
def _builtins_load():
    """The statement that gives a module every builtin: one load() of the frozen prelude."""
    names = ", ".join(f'"{n}"' for n in BUILTIN_NAMES)
    return sl.parse("<builtins>", f'load("{PRELUDE_LABEL}", {names})\n', DIALECT)


_PRELUDE_LOADER = sl.FileLoader(lambda label: frozen_prelude())


# --- loaded modules, by content --------------------------------------------------------

MODULE_CACHE_SIZE = 256  # frozen modules kept per process (least recently used goes first)
_MODULES = OrderedDict()  # (file name, content hash) -> (FrozenModule, ((dep name, FrozenModule), ...))
_MODULES_LOCK = threading.Lock()
MODULE_EVALUATIONS = [0]  # how many modules this process evaluated (tests: a cache hit evaluates none)


def _cached_module(key):
    with _MODULES_LOCK:
        hit = _MODULES.get(key)
        if hit is not None:
            _MODULES.move_to_end(key)
        return hit


def _cache_module(key, frozen, deps):
    with _MODULES_LOCK:
        _MODULES[key] = (frozen, deps)
        _MODULES.move_to_end(key)
        while len(_MODULES) > MODULE_CACHE_SIZE:
            _MODULES.popitem(last=False)


class LoadedModule:
    """A frozen module as Program.load returns it: calls into it run for that Program."""

    def __init__(self, program, frozen):
        self.program, self.frozen = program, frozen

    def call_with(self, *args, **kwargs):
        with _running(self.program):
            return self.frozen.call_with(*args, **kwargs)

    def call(self, *args, **kwargs):
        with _running(self.program):
            return self.frozen.call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.frozen, name)
