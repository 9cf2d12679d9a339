"""`flowmetal test`: find `*_test.star` files, run each `test_*` function on a fresh harness.

A test file is loaded as any workflow file is (it may load the files it tests),
with the `t` object's definitions (tprelude.star) and a table of its test
functions appended to its text, after its last line, so that its own line
numbers are kept. Each test function is called with `t`, a struct of Starlark
functions whose host calls reach that test's Harness through `_effect`.

Each test has a wall-time limit (`timeout`, seconds; `flowmetal test --timeout`).
A watchdog thread sets the harness's `expired` flag when it passes: the test's
own Starlark stops through `check_cancelled`, a run it is executing is
interrupted through its gate's cancel event (the same way a worker stops a
pure-Starlark loop), and the harness raises at its next step. The test fails
saying so, and the next test runs.
"""

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import starlark as sl

from flowmetal.errors import LoadError, UserError
from flowmetal.lang.diagnostics import strip_prelude_frames
from flowmetal.lang.loader import Program
from flowmetal.lang.safe import guard
from flowmetal.lang.workspace import DiskSources, Exclusions, file_name
from flowmetal.testing.harness import Harness, TestFailure, TimeLimit

T_PRELUDE = (Path(__file__).parent / "tprelude.star").read_text(encoding="utf-8")
_TEST_DEF = re.compile(r"^def\s+(test_\w*)\s*\(", re.M)
_FRAME = re.compile(r"^\s*\* (?P<file>.+?):(?P<line>\d+), in (?P<func>.+)$")
DEFAULT_TIMEOUT = 30.0  # seconds of wall time per test (a test takes milliseconds; this catches a loop)
_ARROW = re.compile(r"^\s*-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")


@dataclass
class Outcome:
    file: str
    name: str
    ok: bool
    seconds: float = 0.0
    message: str = ""
    where: str = ""  # file:line of the failing assertion or call
    detail: str = ""
    journal: str = ""
    error: bool = False  # the file could not be loaded (not a failed assertion)

    @property
    def id(self):
        return f"{self.file}::{self.name}"


@dataclass
class Session:
    root: Path
    outcomes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self):
        return [o for o in self.outcomes if not o.ok]

    @property
    def load_errors(self):
        return [o for o in self.outcomes if o.error]


def find_files(paths, root, suffix):
    """Files under `paths` whose names end in `suffix`, sorted, each once."""
    excl = Exclusions(root)
    found = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            if p.name.endswith(suffix):
                found.append(p)
            continue
        if not p.is_dir():
            raise UserError(f"{p}: no such file or directory")
        stack = [p]
        while stack:
            d = stack.pop()
            for child in sorted(d.iterdir()):
                if child.is_dir():
                    if not excl.skip_dir(child):
                        stack.append(child)
                elif child.name.endswith(suffix) and not excl.skip_file(child):
                    found.append(child)
    seen, out = set(), []
    for f in sorted(found, key=lambda f: str(f)):
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


class _TestSources(DiskSources):
    """The workspace's files, with the test file's text extended by the `t` object."""

    def __init__(self, root, name, tests):
        super().__init__(root)
        self.name, self.tests = name, tests
        self.lines = None

    def read(self, name):
        text = super().read(name)
        if name != self.name:
            return text
        self.lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        table = ", ".join(f'"{t}": {t}' for t in self.tests)
        return (text + ("" if text.endswith("\n") else "\n") + T_PRELUDE
                + f"\n_flowmetal_tests = {{{table}}}\n\ndef flowmetal_test__(name):\n    _flowmetal_tests[name](_T)\n")


def _own_traceback(text):
    """A Starlark error's traceback without the harness's own frame (the appended dispatcher)."""
    lines, skip = [], 0
    for ln in text.splitlines():
        if skip:
            skip -= 1
            continue
        if ln.startswith("error: ") or "File <builtin>" in ln:
            continue
        if ln.strip().startswith("*") and ln.rstrip().endswith(", in flowmetal_test__"):
            skip = 1
            continue
        lines.append(ln)
    return "\n".join(lines).strip()


class _Abort(Exception):
    """Raised through the test's evaluation when the harness has recorded why it failed."""


class TestFile:
    def __init__(self, root, path, texts_cache, timeout=DEFAULT_TIMEOUT):
        self.root, self.path, self.cache, self.timeout = root, path, texts_cache, timeout
        self.name = file_name(root, path)
        self.tests = list(dict.fromkeys(_TEST_DEF.findall(Path(path).read_text(encoding="utf-8"))))
        self.harness = None
        self.failure = None
        self.sources = _TestSources(root, self.name, self.tests)
        self.program = Program(self.sources, effect=self._host, log=lambda text: None, expose_effect=True)

    def _host(self, name, args):
        if not name.startswith("t."):
            raise UserError(f"{name}() was called by the test itself: effects run inside runs "
                            f"(t.run(fn) or t.start(fn) the function that calls it)")
        try:
            return self.harness.call(name[2:], args)
        except TestFailure as e:
            self.failure = e
        except TimeLimit:
            self.failure = self._time_failure()
        except UserError as e:
            self.failure = TestFailure(str(e))
        raise _Abort("test failed")

    def load(self):
        self.module = self.program.load(self.name)
        self.program.phase = "execution"

    def _time_failure(self):
        h = self.harness
        detail = ""
        if h.stopped_run:
            row = h.store.get_run(h.stopped_run)
            detail = (f"run {row['id']} ({row['file']}:{row['function']}) was executing and was stopped "
                      f"(its code never waits: a loop that does not end?)")
        return TestFailure(f"{self.test} did not end within its time limit of {self.timeout:g}s of wall time "
                           f"(flowmetal test --timeout SECONDS)", detail)

    def run(self, test):
        started = time.perf_counter()
        schedules = {d.args["name"]: d.args for d in self.program.declarations
                     if d.kind == "schedule" and isinstance(d.args.get("name"), str)}
        self.harness, self.failure, self.test = Harness(self.root, self.cache, schedules), None, test
        out = Outcome(self.name, test, True)
        watchdog = threading.Timer(self.timeout, self.harness.time_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            guard(self.module.call_with, sl.EvalOptions(max_callstack_size=500,
                                                        check_cancelled=self.harness.expired.is_set),
                  "flowmetal_test__", test)
        except (sl.StarlarkError, UserError) as e:
            out.ok = False
            text = str(e)
            out.where = self._where(text)
            if self.failure is None and self.harness.expired.is_set():  # stopped in the test's own code
                self.failure = self._time_failure()
            if self.failure is not None:
                out.message, out.detail = self.failure.message, self.failure.detail
            else:  # a Starlark error in the test itself (fail(), a bad index...)
                cleaned = strip_prelude_frames(text, self.program._read)
                first = next((ln[len("error: "):] for ln in cleaned.splitlines() if ln.startswith("error: ")),
                             cleaned.strip().splitlines()[0] if cleaned.strip() else "error")
                out.message = first
                out.detail = _own_traceback(cleaned)
            out.journal = self.harness.journals_text()
        finally:
            watchdog.cancel()
            self.harness.close()
            out.seconds = time.perf_counter() - started
        return out

    def _where(self, text):
        """file:line of the innermost frame in the test file's own lines."""
        best = None
        for ln in text.splitlines():
            m = _FRAME.match(ln) or _ARROW.match(ln)
            if m and m["file"] == self.name and int(m["line"]) <= (self.sources.lines or 0):
                best = f"{m['file']}:{m['line']}"
        return best or self.name


def replay_golden(root, path):
    """A golden journal replays on the current code: against the workspace's files when
    every run's file is there, else against the sources the journal pinned (then it checks
    that this release still replays what an older one recorded)."""
    from flowmetal.engine.journal_file import read_file
    from flowmetal.engine.replay import replay_document

    started = time.perf_counter()
    name = file_name(root, path)
    out = Outcome(name, "replay", True)
    try:
        doc = read_file(path)
        current = all((Path(root) / item["run"]["file"]).is_file() for item in doc["runs"])
        reports = replay_document(doc, root=root, current=current)
    except (UserError, ValueError, KeyError) as e:
        out.ok, out.error, out.message = False, True, f"{name}: {e}"
        return out
    bad = [report for _, report in reports if not report.ok]
    if bad:
        out.ok, out.where = False, name
        out.message = bad[0].text.split("\n", 1)[0]
        out.detail = "\n".join(r.text for r in bad)
    out.seconds = time.perf_counter() - started
    return out


def run_tests(paths, pattern=None, root=None, on_outcome=None, timeout=DEFAULT_TIMEOUT):
    """Run the tests under `paths` (files or directories); returns a Session."""
    from flowmetal.lang.workspace import root_for

    started = time.perf_counter()
    paths = list(paths) or ["."]
    root = Path(root_for([p for p in paths if Path(p).is_file()] or paths, root))
    session = Session(root)
    cache = {}
    needle = pattern.lower() if pattern else None
    for path in find_files(paths, root, "_test.star"):
        tf = TestFile(root, path, cache, timeout)
        chosen = [t for t in tf.tests if needle is None or needle in f"{tf.name}::{t}".lower()]
        if not chosen:
            continue
        try:
            tf.load()
        except LoadError as e:
            out = Outcome(tf.name, "<load>", False, message=f"{tf.name} does not load", error=True,
                          detail="\n".join(d.render() for d in e.diagnostics) or str(e))
            session.outcomes.append(out)
            if on_outcome:
                on_outcome(out)
            continue
        for test in chosen:
            out = tf.run(test)
            session.outcomes.append(out)
            if on_outcome:
                on_outcome(out)
        tf.program.close()
    if pattern is None or "replay" in needle or "journal" in needle:
        for path in find_files(paths, root, ".journal.json"):
            out = replay_golden(root, path)
            session.outcomes.append(out)
            if on_outcome:
                on_outcome(out)
    session.seconds = time.perf_counter() - started
    return session
