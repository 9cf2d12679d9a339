"""References to a top-level workflow function: the one place they are parsed.

Two spellings exist, and each has one parser here:

- a target, `FILE[:FUNCTION]`, as a user writes it on the command line
  (`flowmetal run jobs/x.star:backup`) and as a schedule stores it
  (`jobs/x.star:backup`): `parse_target`;
- what Starlark prints for a function value, `"jobs/x.star.backup"` (the
  file, a dot, the name), as `spawn()` and `schedule(run = backup)` hand it
  to the host: `parse_function_value`.
"""

import re
from typing import NamedTuple

from flowmetal.errors import UserError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
DEFAULT_FUNCTION = "main"


class FunctionRef(NamedTuple):
    file: str
    function: str

    def __str__(self):
        return f"{self.file}:{self.function}"


def parse_target(text, default=DEFAULT_FUNCTION):
    """`FILE[:FUNCTION]` -> FunctionRef(FILE, FUNCTION).

    The function is what follows the last ":" when that is a name; otherwise
    (no ":", or a ":" that belongs to the path, as in `dir:x/a.star`) the whole
    text is the file and the function is `default`. An empty function
    (`a.star:`) is `default` too. With `default=None` a missing function is an
    error. The file is returned as written: a path on disk for the command line,
    a workspace name for a schedule.
    """
    path, sep, function = text.rpartition(":")
    if not sep or not path or "/" in function or function.endswith(".star"):
        path, function = text, ""
    if function and not _NAME.match(function):
        raise UserError(f"{text!r}: {function!r} is not a function name (letters, digits and '_')")
    if not function:
        if default is None:
            raise UserError(f"{text!r}: expected FILE:FUNCTION, like jobs/backup.star:main")
        function = default
    return FunctionRef(path, function)


def parse_function_value(text):
    """What str() of a Starlark function gives, `"jobs/x.star.backup"` -> FunctionRef.

    A function that was not defined at the top level of a .star file (a builtin,
    say) has no file in its name: that is an error saying so.
    """
    head, sep, name = text.rpartition(".star.")
    if not sep or not head or not _NAME.match(name):
        raise UserError(f"cannot tell which file defines function {text!r}")
    return FunctionRef(head + ".star", name)
