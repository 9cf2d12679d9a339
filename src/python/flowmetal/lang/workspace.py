"""Workspaces and `load()` labels (SPEC section 2).

A workspace is a directory tree. Its root is `--root`, else the nearest
ancestor of the current directory holding a `.flowmetal` marker, else the
current directory. The marker is a directory holding the default database
(`.flowmetal/flowmetal.db`, created on first use), or an empty file (handy to
commit to version control), in which case the default database is
`.flowmetal.db` beside it. When a file named on the command line lies outside that
root, the search starts again from the file's own directory.

Files are named inside Flowmetal by their path relative to the root, with `/`
separators ("jobs/backup.star"); the standard library is "@flowmetal//NAME.star".
Only files whose names end in `.star` are Flowmetal code.

When a directory is searched for `.star` files (`flowmetal check DIR`), `Exclusions`
decides what is skipped: version-control and tool directories, virtual environments
(any directory holding a `pyvenv.cfg`), `site-packages` trees, Flowmetal's own package
(its prelude and standard library), and what the root's `.flowmetalignore` lists.
"""

import fnmatch
import os
import posixpath
from pathlib import Path

from flowmetal.errors import UserError

MARKER = ".flowmetal"
IGNORE_FILE = ".flowmetalignore"
SKIP_DIRS = {".git", ".hg", ".svn", MARKER, "node_modules", "__pycache__", ".venv", "venv", "site-packages",
             ".tox", ".nox", ".mypy_cache", ".pytest_cache"}
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the flowmetal package (preludes, stdlib): never user code
STDLIB_PREFIX = "@flowmetal//"
STDLIB_DIR = Path(__file__).parent / "stdlib"


def default_db_path(root):
    marker = Path(root) / MARKER
    if marker.is_file():
        return str(Path(root) / (MARKER + ".db"))
    return str(marker / "flowmetal.db")


def find_root(start=None):
    start = Path(start or os.getcwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / MARKER).exists():
            return candidate
    return start


def require_star(path):
    """Refuse a file that is not Flowmetal code (before anything is created for it)."""
    if not str(path).endswith(".star"):
        raise UserError(f"{path}: not a Flowmetal file (the names of Starlark files end in .star)")


def root_for(paths, explicit_root=None):
    """The workspace root for files named on the command line (a file must end in .star)."""
    for p in paths:
        if Path(p).is_file():
            require_star(p)
    if explicit_root:
        root = Path(explicit_root).resolve()
        if not root.is_dir():
            raise UserError(f"--root {explicit_root}: not a directory")
        return root
    root = find_root()
    for p in paths:
        full = Path(p).resolve()
        if not _inside(full, root):
            return find_root(full if full.is_dir() else full.parent)
    return root


def _inside(path, root):
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return False


class LabelError(UserError):
    pass


def file_name(root, path):
    """The in-workspace name of a file on disk (refusing anything outside the root)."""
    full = Path(path).absolute()
    real = full.resolve()
    root = Path(root).resolve()
    if not _inside(real, root):
        raise LabelError(f"{path}: outside the workspace root {root}")
    try:
        rel = full.relative_to(root)
    except ValueError:
        rel = real.relative_to(root)
    return rel.as_posix()


def resolve_label(label, from_name):
    """Resolve a load() label, as written in file `from_name`, to a file name."""
    if not isinstance(label, str) or not label:
        raise LabelError(f"invalid load label {label!r}")
    if label.startswith(STDLIB_PREFIX):
        rest = label[len(STDLIB_PREFIX):]
        norm = posixpath.normpath(rest)
        if norm.startswith("..") or norm.startswith("/") or "/" in norm:
            raise LabelError(f"invalid standard library label {label!r}")
        name = STDLIB_PREFIX + norm
    elif label.startswith("//"):
        name = _normalize(label[2:], label)
    elif label.startswith("/") or label.startswith("@"):
        raise LabelError(
            f"label {label!r} is not allowed: use \"//path/from/root.star\", a path relative to this file, "
            f"or \"@flowmetal//NAME.star\""
        )
    elif from_name.startswith(STDLIB_PREFIX):
        name = resolve_label(STDLIB_PREFIX + label, from_name)
    else:
        name = _normalize(posixpath.join(posixpath.dirname(from_name), label), label)
    if not name.endswith(".star"):
        raise LabelError(f"label {label!r} must name a .star file")
    return name


def _normalize(path, label):
    norm = posixpath.normpath(path)
    if norm.startswith("..") or norm.startswith("/"):
        raise LabelError(f"label {label!r} leaves the workspace root")
    return norm


class DiskSources:
    """Reads workspace files from disk, refusing symlinks that leave the root."""

    def __init__(self, root):
        self.root = Path(root).resolve()

    def read(self, name):
        if name.startswith(STDLIB_PREFIX):
            path = STDLIB_DIR / name[len(STDLIB_PREFIX):]
            if not path.is_file():
                raise LabelError(f"no standard library file {name!r}")
            return path.read_text(encoding="utf-8")
        path = self.root / name
        real = path.resolve()
        if not _inside(real, self.root):
            raise LabelError(f"{name} is a link to {real}, outside the workspace root {self.root}")
        if not real.is_file():
            raise LabelError(f"file {name} does not exist (looked for {path})")
        try:
            return real.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise LabelError(f"{name} is not UTF-8 text") from None


class PinnedSources:
    """Reads the exact sources a run pinned when it started."""

    def __init__(self, sources):
        self.sources = dict(sources)

    def read(self, name):
        try:
            return self.sources[name]
        except KeyError:
            raise LabelError(f"{name} is not among this run's pinned sources") from None


class Exclusions:
    """What a search of the workspace for `.star` files skips.

    `.flowmetalignore` at the root holds one pattern a line (`#` starts a comment):
    a pattern without `/` (`build`, `*.gen.star`) matches a file or directory of that
    name anywhere; one with `/` (`third_party/vendored`, `/tools/*.star`) matches a
    path from the root. A matched directory is skipped with everything under it.
    """

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.names, self.paths = [], []
        try:
            text = (self.root / IGNORE_FILE).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        for line in text.splitlines():
            pattern = line.split("#", 1)[0].strip().rstrip("/")
            if not pattern:
                continue
            if "/" in pattern:
                self.paths.append(pattern.lstrip("/"))
            else:
                self.names.append(pattern)

    def _listed(self, path):
        name = path.name
        if any(fnmatch.fnmatchcase(name, p) for p in self.names):
            return True
        try:
            rel = path.absolute().relative_to(self.root).as_posix()
        except ValueError:
            return False
        return any(fnmatch.fnmatchcase(rel, p) for p in self.paths)

    def skip_dir(self, path):
        path = Path(path)
        if path.name in SKIP_DIRS or path.name.startswith("bazel-") or (path / "pyvenv.cfg").exists():
            return True
        try:
            if path.resolve() == PACKAGE_DIR:
                return True
        except OSError:
            return True
        return self._listed(path)

    def skip_file(self, path):
        return self._listed(Path(path))
