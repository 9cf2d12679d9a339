"""The `.star` files under some paths of a workspace: found, checked, and their schedules collected.

`Workspace(root, paths).load()` runs `flowmetal check` over the paths once and
returns a `Loaded`: the schedules of the files that load cleanly, the source
texts each schedule's runs pin (the file plus everything it loads, found by
parsing its load() statements), the files that are broken (with their
`file:line:col` diagnostics) and the files that were read as empty.
`signature()` is a cheap fingerprint (names, mtimes, sizes) to notice edits.

Used by `flowmetal schedule` (daemon, --once, --list, --dry-run); it lives in
`lang` because it only reads and checks files: it knows nothing of the store,
the engine or the scheduler.

Two kinds of file keep their last good schedules (the scheduler decides what
that means; see flowmetal.schedule.reconcile):

- a *broken* file: `check` reports an error in it or in a file it loads
  (a parse error, a `load()` of a missing file, an unknown name, an invalid
  `schedule()`); it is never a reason to fail the whole load;
- an *unsettled* file: read as empty (zero bytes or only whitespace). That is
  what an in-place rewrite (`printf ... > jobs.star`, an editor truncating
  before writing) looks like part way; an empty file declares nothing, so
  treating it as "no schedules" would remove them and reset their history.
  To remove a file's schedules, delete the file or its `schedule()` calls.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from flowmetal.errors import UserError
from flowmetal.lang.diagnostics import Diagnostic


@dataclass
class Loaded:
    specs: list  # ScheduleSpecs of the files that load cleanly
    texts: dict  # schedule name -> {file: text} its runs pin
    broken: dict  # file -> [Diagnostic]: files with errors (they keep their last good schedules)
    deps: set  # every workspace file the good ones loaded
    unsettled: set = field(default_factory=set)  # files read as empty (they keep their last good schedules)

    @property
    def kept(self):
        """Files whose stored schedules stay as they were: broken or unsettled."""
        return set(self.broken) | self.unsettled


class Workspace:
    """The .star files under some paths (files or directories) of a workspace root."""

    def __init__(self, root, paths):
        from flowmetal.lang.workspace import file_name

        self.root = Path(root).resolve()
        self.paths = [str(p) for p in paths] or ["."]
        self.deps = set()
        self._exact, self._prefixes = set(), []
        for p in self.paths:
            path = Path(p)
            if path.is_dir():
                rel = file_name(self.root, path)
                self._prefixes.append("" if rel == "." else rel.rstrip("/") + "/")
            else:
                self._exact.add(file_name(self.root, path) if path.exists() else str(p))

    def in_scope(self, file):
        """Is a stored schedule's file one this workspace serves? (Else it is left alone.)"""
        return file in self._exact or any(file.startswith(p) for p in self._prefixes)

    def files(self):
        from flowmetal.lang.check import star_files

        return star_files(self.root, self.paths)

    def signature(self):
        """Names, mtimes and sizes of the files under the paths and the files they load."""
        try:
            names = set(self.files())
        except UserError as e:
            return ("error", str(e))
        sig = []
        for name in sorted(names | self.deps):
            if name.startswith("@"):
                continue
            try:
                st = os.stat(self.root / name)
                sig.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((name, None, None))
        return tuple(sig)

    def load(self):
        """Load and check every file (raises UserError when a path does not exist).

        `flowmetal check` evaluates the files once; each file's pinned texts are
        that file plus what it loads (found by parsing its load() statements).
        A file is broken when check reports an error in it or in a file it loads.
        """
        from flowmetal.lang.check import check

        report = check(self.root, self.paths)
        errors = [d for d in report.diagnostics if d.severity == "error"]
        files = self.files()
        sources = _Texts(self.root)
        by_file = {}
        for spec in report.schedules:
            by_file.setdefault(spec.file, []).append(spec)
        specs, texts, broken, deps, unsettled = [], {}, {}, set(), set()
        for name in files:
            closure = sources.closure(name)
            reached = sources.reached(name)  # with a load that failed: what it tried to load, too
            bad = [d for d in errors if d.file in reached]
            if bad or closure is None:
                broken[name] = bad or [_diagnostic(name, sources.problem(name))]
                continue
            if not sources.texts[name].strip():
                unsettled.add(name)
                continue
            deps |= set(closure)
            pinned = {n: sources.texts[n] for n in closure}
            for spec in by_file.get(name, []):
                specs.append(spec)
                texts[spec.name] = pinned
        for file, found in by_file.items():  # declared in a loaded file that is not under the paths
            if file in texts or file in broken or file in files:
                continue
            closure = sources.closure(file)
            if closure is None or any(d.file in closure for d in errors):
                continue
            pinned = {n: sources.texts[n] for n in closure}
            for spec in found:
                specs.append(spec)
                texts[spec.name] = pinned
        return Loaded(specs, texts, broken, {d for d in deps if not d.startswith("@")}, unsettled)


def _diagnostic(file, message):
    return Diagnostic(file, 1, 1, message)


class _Texts:
    """Reads workspace files once and follows their load() statements."""

    def __init__(self, root):
        from flowmetal.lang.workspace import DiskSources

        self.disk = DiskSources(root)
        self.texts = {}
        self._closures = {}
        self._problems = {}  # file -> why its closure could not be had
        self._loads = {}  # file -> the files its load() statements name (when it parses)

    def read(self, name):
        if name not in self.texts:
            self.texts[name] = self.disk.read(name)
        return self.texts[name]

    def reached(self, name):
        """The file and every file it loads or tried to load, transitively (after `closure`)."""
        out, todo = set(), [name]
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(self._loads.get(n, ()))
        return out

    def problem(self, name):
        return self._problems.get(name) or f"{name} cannot be read"

    def closure(self, name, _stack=()):
        """The file and every file it loads (transitively), or None if one cannot be read or parsed."""
        from flowmetal.lang.loader import parse
        from flowmetal.lang.workspace import resolve_label

        if name in self._closures:
            return self._closures[name]
        if name in _stack:
            return {name}
        try:
            loads = [resolve_label(load.module_id, name) for load in parse(name, self.read(name)).loads()]
        except Exception as e:  # unreadable, unparsable, bad label: check reports it
            self._problems[name] = f"{name} cannot be loaded: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            self._closures[name] = None
            return None
        self._loads[name] = loads
        out = {name}
        for dep in loads:
            sub = self.closure(dep, (*_stack, name))
            if sub is None:
                self._problems[name] = self._problems.get(dep) or f"{name} loads {dep}, which cannot be loaded"
                self._closures[name] = None
                return None
            out |= sub
        self._closures[name] = out
        return out
