"""Diagnostics: `file:line:col: message` with the source line, from any Starlark error."""

import re
from dataclasses import dataclass

PRELUDE = "@flowmetal//builtins.star"
MAX_SHOWN = 160  # characters of a long source line shown under a diagnostic

_ARROW = re.compile(r"^\s*-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_FRAME = re.compile(r"^\s*\* (?P<file>.+?):(?P<line>\d+), in (?P<func>.+)$")
# Exception class names of ours that Starlark prefixes to messages ("UserError: ...").
_OUR_PREFIX = re.compile(r"^(?:error: )?(?:UserError|LoadError|LabelError|BuiltinError|PhaseError|"
                         r"ValueError|TypeError|SuspendSignal|Interrupt|NondeterminismError|EffectError): ")


@dataclass
class Diagnostic:
    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str
    source_line: str = ""
    severity: str = "error"

    def render(self):
        head = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        if not self.source_line:
            return head
        line, col = self.source_line, self.col
        if len(line) > MAX_SHOWN:  # a generated or minified line: show the part around the column
            start = max(0, min(col - 1 - MAX_SHOWN // 2, len(line) - MAX_SHOWN))
            shown = line[start:start + MAX_SHOWN]
            prefix, suffix = ("..." if start else ""), ("..." if start + MAX_SHOWN < len(line) else "")
            line, col = prefix + shown + suffix, col - start + len(prefix)
        caret = " " * (col - 1) + "^"
        return f"{head}\n    {line}\n    {caret}"

    def key(self):
        return (self.file, self.line, self.col, self.message)


def clean_message(text):
    return _OUR_PREFIX.sub("", text.strip())


def from_starlark_error(text, read_source, default_file="<unknown>"):
    """Turn the text of a StarlarkError into a Diagnostic at the user's location.

    Frames inside the prelude are skipped: an error raised by a builtin is
    reported where the user's code called it. An error that names no place at all
    (some of starlark's own, such as a value it cannot convert) is put at line 1
    of `default_file`, the file being loaded or checked.
    """
    lines = text.splitlines()
    message = ""
    for ln in lines:
        if ln.startswith("error: "):
            message = clean_message(ln[len("error: "):])
            break
    if not message:
        message = clean_message(lines[0] if lines else text)
    loc = None
    for ln in lines:
        m = _ARROW.match(ln)
        if m:
            loc = (m["file"], int(m["line"]), int(m["col"]))
    if loc is None or loc[0] == PRELUDE:
        frames = [m for m in map(_FRAME.match, lines) if m]
        user = [i for i, m in enumerate(frames) if m["file"] != PRELUDE]
        if user:
            at = frames[user[-1]]
            file, line = at["file"], int(at["line"])
            source = _source_line(read_source, file, line)
            col = len(source) - len(source.lstrip()) + 1 if source else 1
            if user[-1] + 1 < len(frames):  # called a builtin: point at the call
                builtin = frames[user[-1] + 1]["func"]
                found = re.search(r"\b" + re.escape(builtin) + r"\s*\(", source)
                if found:
                    col = found.start() + 1
            loc = (file, line, col)
    if loc is None:
        return Diagnostic(default_file, 1, 1, message, _source_line(read_source, default_file, 1).rstrip())
    file, line, col = loc
    return Diagnostic(file, line, col, message, _source_line(read_source, file, line).rstrip())


def _source_line(read_source, file, line):
    try:
        text = read_source(file)
    except Exception:
        return ""
    src = text.splitlines()
    return src[line - 1] if 0 < line <= len(src) else ""


def strip_prelude_frames(traceback_text, read_source=None):
    """A Starlark traceback as a user should see it: without the frames of
    Flowmetal's own prelude, without Python class names in the message, and,
    when the error was raised inside a builtin, pointing at the user's call."""
    out, skip = [], False
    lines = traceback_text.splitlines()
    tail_at = next((i for i, ln in enumerate(lines) if ln.startswith("error: ")), len(lines))
    for ln in lines[:tail_at]:
        m = _FRAME.match(ln)
        if m:
            skip = m["file"] == PRELUDE
            if skip:
                continue
        elif skip and ln.startswith("      "):
            continue
        else:
            skip = False
        out.append(ln)
    tail = lines[tail_at:]
    if not tail:
        return "\n".join(out)
    message = clean_message(tail[0][len("error: "):])
    arrow = next((_ARROW.match(ln) for ln in tail if _ARROW.match(ln)), None)
    if arrow is None or arrow["file"] != PRELUDE or read_source is None:
        return "\n".join(out + [f"error: {message}"] + tail[1:])
    d = from_starlark_error(traceback_text, read_source)
    out.append(f"error: {message}")
    out.append(f" --> {d.file}:{d.line}:{d.col}")
    if d.source_line:
        width = len(str(d.line))
        out.append(f"{' ' * width} |")
        out.append(f"{d.line} | {d.source_line}")
        out.append(f"{' ' * width} | {' ' * (d.col - 1)}^")
    return "\n".join(out)
