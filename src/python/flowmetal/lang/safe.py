"""Calling into starlark-pyo3 without crashing the process (doc/language.md, "Limits").

Three guards, used by every place that parses, lints, typechecks or evaluates user code:

- `nesting_problem(name, text)`: a scan of the source before starlark sees it. Starlark's
  parser, compiler and typechecker recurse once per level of nesting, on the native stack,
  with no check: 4,000 chained `+` or 1,500 nested `lambda:` overflow an 8 MiB stack and
  the process dies with SIGSEGV. A file nested deeper than MAX_DEPTH is refused with a
  `file:line:col` diagnostic at the token that goes past the limit.
- `guard(fn, ...)`: a Rust panic inside starlark-pyo3 arrives as `PanicException`, which
  derives from BaseException (so `except Exception` misses it); it becomes a `StarlarkPanic`
  (a UserError) here.
- `on_big_stack(fn, ...)`: runs `fn` on a thread with a STACK_SIZE stack, as a second line of
  defence behind the depth limit. `enlarge_thread_stacks()` (called when the loader is imported)
  makes every thread started afterwards that big, worker pools included, so only threads that
  already existed then (the main thread) hop to a fresh thread, one per call (~70 us), and
  what Rust prints on stderr for a panic meanwhile is held back (`native_stderr_filtered`).
"""

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

from flowmetal.errors import UserError

# Nesting depth a file may reach: indentation levels + `elif`s chained to one `if` + open
# brackets + the operators, attribute accesses, calls, `not`s and `lambda`s chained in one expression. At this depth
# the deepest-costing shape (nested lambdas, ~5 KiB of native stack a level) needs ~1 MiB.
MAX_DEPTH = 200
STACK_SIZE = 64 * 1024 * 1024

# --- the depth scan ------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<str>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''
                        |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<open_str>[rRbB]{0,2}(?:\"\"\"|'''|"|'))
  | (?P<comment>\#[^\n]*)
  | (?P<cont>\\\r?\n)
  | (?P<nl>\r?\n)
  | (?P<space>[ \t\f]+)
  | (?P<num>\d[\w.]*(?:[eE][-+]?\d+)?|\.\d[\w]*)
  | (?P<name>[^\W\d]\w*)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<reset>[,;]|(?:\*\*|//|<<|>>|[-+*/%&|^])?=(?!=))
  | (?P<op>\*\*|//|<<|>>|==|!=|<=|>=|->|[-+*/%&|^~<>.@])
  | (?P<other>.)
""", re.X | re.S)
# Keywords that nest the expression that follows them, like an operator.
_NESTING_WORDS = {"not", "and", "or", "lambda", "if", "else", "in", "for", "is"}


def _indent_width(text, pos):
    width = 0
    while pos < len(text) and text[pos] in " \t\f":
        width = (width // 8 + 1) * 8 if text[pos] == "\t" else width + 1
        pos += 1
    return width, pos


def nesting_problem(text, limit=MAX_DEPTH):
    """(line, col, message) where `text` first nests deeper than `limit`, else None."""
    indents = [0]
    elifs = [0]  # per indentation level: the `elif`s of the `if` open there (each nests the next)
    chains = [0]  # per open bracket (and the statement itself): operators chained at that level
    pos, at_line_start = 0, True
    n = len(text)
    while pos < n:
        if at_line_start and len(chains) == 1:
            width, after = _indent_width(text, pos)
            if after < n and text[after] not in "#\r\n":  # a line with code: its indentation counts
                while indents[-1] > width:
                    indents.pop()
                    elifs.pop()
                if width > indents[-1]:
                    indents.append(width)
                    elifs.append(0)
                word = re.match(r"\w*", text[after:after + 5])[0]
                if word == "elif":
                    elifs[-1] += 1
                elif word != "else":
                    elifs[-1] = 0
            at_line_start = False
        m = _TOKEN.match(text, pos)
        kind, pos = m.lastgroup, m.end()
        if kind == "nl":
            at_line_start = True
            if len(chains) == 1:
                chains[0] = 0
            continue
        grow = 0  # (an unterminated string, "open_str", is left to the parser; the scan goes on after it)
        if kind == "open":
            chains.append(0)
            grow = 1
        elif kind == "close":
            if len(chains) > 1:
                chains.pop()
            chains[-1] += 1  # `f()()`, `x[0][0]`: each closed group is a link of a chain
        elif kind == "reset":
            chains[-1] = 0
        elif kind == "op" or kind == "name" and m.group() in _NESTING_WORDS:
            chains[-1] += 1
            grow = 1
        if grow and len(indents) - 1 + sum(elifs) + len(chains) - 1 + sum(chains) > limit:
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            return line, col, (f"expression nested deeper than {limit} levels (indentation, elifs, brackets "
                               f"and chained operators all count); split it into smaller expressions or functions")
    return None


# --- panics ----------------------------------------------------------------------------


class StarlarkPanic(UserError):
    """starlark-pyo3 panicked (a bug or a resource limit inside Starlark, not in the user's code)."""


def is_panic(e):
    return type(e).__name__ == "PanicException"


def guard(fn, *args, **kwargs):
    """fn(*args, **kwargs), with a Rust panic turned into StarlarkPanic."""
    try:
        return fn(*args, **kwargs)
    except BaseException as e:
        if is_panic(e):
            raise StarlarkPanic(f"Starlark failed internally: {str(e) or 'panic'}") from None
        raise


# --- stacks ------------------------------------------------------------------------------

_small_threads = set()  # idents of the threads that existed before thread stacks were enlarged
_enlarged = False


def enlarge_thread_stacks():
    """Make every thread started from now on get a STACK_SIZE stack (reserved address space,
    committed only as it is used). Idempotent."""
    global _enlarged
    if _enlarged:
        return
    _small_threads.update(t.ident for t in threading.enumerate())
    threading.stack_size(STACK_SIZE)
    _enlarged = True


def on_big_stack(fn, *args, **kwargs):
    """fn(*args, **kwargs) on a thread with a big stack: this one if it has one, else a new one.
    Exceptions (BaseException included) are raised here."""
    if _enlarged and threading.get_ident() not in _small_threads:
        return fn(*args, **kwargs)
    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    enlarge_thread_stacks()
    thread = threading.Thread(target=target, name="flowmetal-starlark", daemon=True)
    with native_stderr_filtered():
        thread.start()
        thread.join()
    if "error" in box:
        raise box.pop("error")
    return box["value"]


@contextmanager
def native_stderr_filtered():
    """Hold back what Rust prints on file descriptor 2 while the block runs (a panic prints
    `thread ... panicked at ...` and, with RUST_BACKTRACE, a backtrace, before it reaches us
    as an exception), then write out the lines that are not part of a panic report.
    Used while the main thread waits for a call on a big stack (`check`, the load of `run`,
    `start` and `replay`); it redirects the process's fd 2, so what other threads print meanwhile
    comes out at the end. An allocation failure in Rust aborts the process (no panic): its
    message is lost with it."""
    if not _stderr_lock.acquire(blocking=False):  # another thread is filtering: fd 2 is not ours to move
        yield
        return
    try:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        with _filtered_into_temp(saved):
            yield
    finally:
        _stderr_lock.release()


_stderr_lock = threading.Lock()


@contextmanager
def _filtered_into_temp(saved):
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = _without_panic_reports(tmp.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


_PANIC_HEAD = re.compile(r"^thread '.*?'.*? panicked at ")


def _without_panic_reports(text):
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if _PANIC_HEAD.match(line):
            skipping = True
            continue
        if skipping:
            if line.startswith("note: "):
                skipping = False
            continue
        out.append(line)
    return "".join(out)

