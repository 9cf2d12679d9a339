"""`flowmetal check`: load every `.star` file under some paths and report every problem.

For each file: syntax and load errors (from loading it, with everything it
loads), unknown names and type errors (starlark's typechecker, with the
builtins visible), lints (starlark's linter), and invalid `schedule()`
declarations; across the workspace, duplicate schedule names.
"""

import os
import re
from pathlib import Path

import starlark as sl

from flowmetal.errors import UserError
from flowmetal.lang.diagnostics import PRELUDE, Diagnostic, from_starlark_error
from flowmetal.lang.loader import BUILTIN_NAMES, DIALECT, GLOBALS, Program, SourceError, parse, prelude_ast, \
    top_level_functions
from flowmetal.lang.safe import StarlarkPanic, guard, on_big_stack
from flowmetal.lang.workspace import DiskSources, Exclusions, LabelError, file_name, require_star

# Lints that point at real mistakes are errors; the rest are warnings, and
# those starlark itself disables are not shown.
ERROR_LINTS = {"duplicate-key", "duplicate-top-level-assign"}


def star_files(root, paths, skipped=None):
    """Every .star file under the given paths (files or directories), as workspace names.

    A file named explicitly is always taken; a directory's search skips what
    workspace.Exclusions says, and links to files outside the root (appended to `skipped`,
    when given: they are reported where a load() uses them)."""
    out = []
    exclusions = Exclusions(root)
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"{p}: no such file or directory")
        if path.is_file() or path.is_symlink() and not path.is_dir():
            require_star(p)
            out.append(file_name(root, path))
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not exclusions.skip_dir(Path(dirpath) / d))
            for f in sorted(filenames):
                if f.endswith(".star") and not exclusions.skip_file(Path(dirpath) / f):
                    try:
                        out.append(file_name(root, Path(dirpath) / f))
                    except LabelError:
                        if skipped is not None:
                            skipped.append(Path(dirpath) / f)
    return sorted(set(out))


class Report:
    def __init__(self):
        self.diagnostics = []
        self.schedules = []
        self.files = 0

    def add(self, d):
        if d.key() not in {x.key() for x in self.diagnostics}:
            self.diagnostics.append(d)

    @property
    def errors(self):
        return [d for d in self.diagnostics if d.severity == "error"]


def check(root, paths):
    """Check the .star files under `paths`, on a big native stack (safe.on_big_stack)."""
    return on_big_stack(_check, root, paths)


def _check(root, paths):
    root = Path(root).resolve()
    report = Report()
    sources = DiskSources(root)
    names, skipped = [], []
    for p in paths:
        try:
            names.extend(star_files(root, [p], skipped))
        except LabelError as e:
            report.add(Diagnostic(str(p), 1, 1, str(e)))
    for link in skipped:
        rel = Path(os.path.relpath(link.absolute(), root)).as_posix()
        report.add(Diagnostic(rel, 1, 1, f"not checked: a link to {link.resolve()}, outside the workspace root",
                              severity="warning"))
    program = Program(sources, lenient=True)
    for name in sorted(set(names)):
        report.files += 1
        try:
            program.load(name)
        except UserError:
            pass
        text = program.texts.get(name)
        if text is None:
            continue
        for d in _static(name, text, program):
            report.add(d)
    for d in program.diagnostics:
        report.add(d)
    specs = collect_schedules(program, report)
    report.schedules = specs
    report.diagnostics.sort(key=lambda d: (d.file, d.line, d.col))
    return report


def _static(name, text, program):
    """Lints and typecheck of one file, with the builtins and its loads visible."""
    try:
        ast = parse(name, text)
        lints = guard(ast.lint)
    except (sl.StarlarkError, SourceError, StarlarkPanic):
        return []  # already reported by loading
    out = []
    lines = text.splitlines()
    for lint in lints:
        severity = str(lint.severity)
        if "Disabled" in severity:
            continue
        loc = lint.resolved_location
        begin = loc.span.begin
        kind = "error" if lint.short_name in ERROR_LINTS else "warning"
        src = lines[begin.line] if begin.line < len(lines) else ""
        out.append(Diagnostic(name, begin.line + 1, begin.column + 1, f"{lint.problem} [{lint.short_name}]", src, kind))
    out.extend(_typecheck(name, text, program))
    return out


def _typecheck(name, text, program):
    """Typecheck with the prelude visible: a load() of it is appended at the end, so lines do not move."""
    if name not in program.modules or name in program.stubbed:
        # It failed to load, or loaded only with unknown names stubbed: those errors are reported,
        # its loads may not resolve, and starlark's typechecker panics on an unknown name.
        return []
    used = [b for b in BUILTIN_NAMES if re.search(r"\b" + b + r"\b", text)]
    defined = set(top_level_functions(text)) | set(re.findall(r"^(\w+)\s*=", text, re.M))
    used = [b for b in used if b not in defined]
    interfaces = {}
    try:
        _, prelude_iface, _ = guard(prelude_ast().typecheck, GLOBALS, {})
        interfaces[PRELUDE] = prelude_iface
        source = text
        if used:
            source = text.rstrip("\n") + "\n" + f"load({PRELUDE!r}, " + ", ".join(repr(u) for u in used) + ")\n"
        ast = guard(sl.parse, name, source, DIALECT)
        for load in ast.loads():
            if load.module_id == PRELUDE:
                continue
            iface = _interface_of(load.module_id, name, program)
            if iface is None:
                return []  # the load itself failed: reported by loading
            interfaces[load.module_id] = iface
        errors, _, _ = guard(ast.typecheck, GLOBALS, interfaces)
    except sl.StarlarkError:
        return []
    except StarlarkPanic as e:
        return [Diagnostic(name, 1, 1, f"{e} (while typechecking this file)")]
    out = []
    for e in errors:
        d = from_starlark_error(str(e), program._read, name)
        if "Internal error" in d.message:
            continue
        out.append(d)
    return out


def _interface_of(label, from_name, program, _cache={}):
    from flowmetal.lang.workspace import resolve_label

    try:
        target = resolve_label(label, from_name)
    except LabelError:
        return None
    text = program.texts.get(target)
    if text is None or target not in program.modules:
        return None
    key = (target, hash(text))
    if key not in _cache:
        try:
            inner = {}
            ast = guard(sl.parse, target, text, DIALECT)
            for load in ast.loads():
                iface = _interface_of(load.module_id, target, program)
                if iface is None:
                    return None
                inner[load.module_id] = iface
            _, iface, _ = guard(ast.typecheck, GLOBALS, inner)
        except (sl.StarlarkError, StarlarkPanic):
            return None
        _cache[key] = iface
    return _cache[key]


# The keyword arguments of a schedule's on_failure run (schedule/daemon.py passes these).
ON_FAILURE_ARGS = ("run_id", "schedule", "fire_time", "state", "error")


def collect_schedules(program, report=None):
    """Validate the schedule() declarations a program made; returns ScheduleSpecs.

    Problems go to `report` (when given) as diagnostics at the declaration.
    """
    from flowmetal.lang.refs import parse_function_value, parse_target
    from flowmetal.lang.signature import signature
    from flowmetal.schedule.spec import BadTarget, validate_schedule

    def arguments_problems(spec):
        """What is wrong with the arguments each fire's run (and on_failure run) is called with."""
        out = []
        for what, target, args, why in (
                ("args", spec.run, spec.args, ""),
                ("on_failure", spec.on_failure, dict.fromkeys(ON_FAILURE_ARGS),
                 f" (it is called with {', '.join(ON_FAILURE_ARGS)})")):
            if target is None:
                continue
            file, function = parse_target(target)
            sig = signature(program.texts.get(file, ""), function)
            problems = sig.problems(args) if sig else []
            if problems:
                out.append(f"schedule {spec.name!r}: {what}: {'; '.join(problems)}{why}")
        return out

    specs, seen = [], {}
    for decl in program.declarations:
        if decl.kind != "schedule":
            continue
        args = dict(decl.args)
        for key in ("run", "on_failure"):
            ref, kind = args.pop(key), args.pop(key + "_type")
            if key == "on_failure" and kind == "NoneType":
                args[key] = None
            elif ref is None:
                args[key] = BadTarget(f"got a {kind}")
            else:
                try:
                    file, function = parse_function_value(ref)
                except UserError:
                    file, function = None, ref
                if file is None or not program.function_exists(file, function):
                    args[key] = BadTarget(f"{function!r} is not defined at the top level of a file "
                                          f"(a lambda or a nested function cannot be scheduled)")
                else:
                    args[key] = f"{file}:{function}"
        spec, problems = validate_schedule(args, file=decl.file, line=decl.line)
        if spec is not None and not problems:
            problems = arguments_problems(spec)
        src = program.texts.get(decl.file, "").splitlines()
        source_line = src[decl.line - 1] if 0 < decl.line <= len(src) else ""
        name = decl.args.get("name")
        if isinstance(name, str) and name:
            if name in seen:
                other = seen[name]
                problems = [*problems, f"duplicate schedule name {name!r} (also declared at {other.file}:{other.line})"]
            else:
                seen[name] = decl
        if spec is not None and not problems:
            specs.append(spec)
        if report is not None:
            for p in problems:
                report.add(Diagnostic(decl.file, decl.line, decl.col, p, source_line))
    return specs
