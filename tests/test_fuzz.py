"""Fuzzing the checker and the loader with malformed and deeply nested files (issue 12, Acceptance).

Each file is generated from a seed: one of the deep shapes that used to crash starlark's
native stack, a mutation (cut, spliced, duplicated, re-indented...) of a real example, a
soup of Starlark tokens, broken bytes, or broken load() calls. Every file goes through
`flowmetal.lang.check.check` and `Program.load`, in-process, in a child process (so a
segfault fails the test instead of killing pytest). The child asserts, for each file:
no exception other than Flowmetal's own user errors, and, when the loader rejects it, a
`file:line:col` error inside that file. The test asserts the child exited 0 and printed
no traceback and no Rust panic report.

Locally, more files (doc/language.md, "Fuzzing"):

    PYTHONPATH=src/python python3 tests/test_fuzz.py --files 20000 --seed 1
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SEEDS = sorted((REPO / "examples").glob("**/*.star")) + sorted(
    (REPO / "src/python/flowmetal/lang/stdlib").glob("*.star"))

# The shapes of issue 12, item 1: depth -> source.
SHAPES = {
    "plus": lambda n: "X = " + "+".join(["1"] * n) + "\n",
    "neg": lambda n: "X = " + "-" * n + "1\n",
    "list": lambda n: "X = " + "[" * n + "]" * n + "\n",
    "open_list": lambda n: "X = " + "[" * n + "\n",
    "lambda": lambda n: "X = " + "lambda: " * n + "1\n",
    "attr": lambda n: "X = struct(a = 1)" + ".a" * n + "\n",
    "not": lambda n: "X = " + "not " * n + "True\n",
    "if": lambda n: "def f():\n" + "".join("    " * (i + 1) + "if True:\n" for i in range(n)) + "    " * (n + 1) + "pass\n",
    "elif": lambda n: "def f(a):\n    if a == 0:\n        return 0\n" + "".join(
        f"    elif a == {i}:\n        return {i}\n" for i in range(1, n)) + "    return -1\n",
    "call": lambda n: "def f():\n    return f\nX = f" + "()" * n + "\n",
    "index": lambda n: "X = [0]" + "[0]" * n + "\n",
    "paren": lambda n: "X = " + "(" * n + "1" + ")" * n + "\n",
    "dict": lambda n: "X = " + "{1: " * n + "1" + "}" * n + "\n",
    "ternary": lambda n: "X = " + "1 if True else " * n + "0\n",
    "and": lambda n: "X = " + " and ".join(["True"] * n) + "\n",
    "compare": lambda n: "X = " + " < ".join(["1"] * n) + "\n",
    "in_def": lambda n: "def main():\n    return " + "-" * n + "1\n",
    "comprehension": lambda n: "X = " + "[x for x in " * n + "[1]" + "]" * n + "\n",
    "mixed": lambda n: "X = " + "".join(random.Random(n).choice(["-", "not ", "(", "[", "lambda: "]) for _ in range(n)) + "1\n",
}
TOKENS = ["def", "if", "elif", "else", "for", "in", "return", "lambda", "load", "not", "and", "or", "pass",
          "break", "continue", "schedule", "x", "y", "main", "(", ")", "[", "]", "{", "}", ":", ",", ".", "=",
          "==", "+", "-", "*", "**", "/", "//", "%", "<", ">", "|", "&", "^", "~", "1", "0x1f", "1.5e3", "'s'",
          '"t"', '"""', "'''", "r'\\d'", "#", "\\", "\n", "\n    ", "\n        ", "\t", " ", ";", "@", "$", "?",
          "\x00", "\u00e9", "\U0001f600", "None", "True", "False", "struct", "sh", "sleep", "print", "*args",
          "**kw", "->", "+=", "'", '"']
LOADS = ['load("//missing.star", "x")\n', 'load("/abs.star", "x")\n', 'load("x.txt", "x")\n',
         'load("@other//a.star", "x")\n', 'load("../../up.star", "x")\n', 'load("outside_link.star", "x")\n',
         'load("cycle_a.star", "a")\n', 'load("@flowmetal//nosuch.star", "x")\n', 'load("@flowmetal//text.star")\n',
         'load("@flowmetal//text.star", "nosuch")\n', 'load(1, "x")\n', 'load("f{}.star", "X")\n']
FIXED = {
    "cycle_a.star": 'load("cycle_b.star", "b")\na = 1\n',
    "cycle_b.star": 'load("cycle_a.star", "a")\nb = 2\n',
}


def generate(rng, i, seed_texts):
    """(text or bytes) of the i-th fuzz file."""
    kind = rng.choice(["shape", "shape", "mutant", "mutant", "mutant", "soup", "bytes", "loads"])
    if kind == "shape":
        name = rng.choice(sorted(SHAPES))
        depth = rng.choice([rng.randint(1, 250), rng.randint(150, 260), rng.randint(250, 6000)])
        depth = min(depth, 1500) if name in ("lambda", "elif", "if", "comprehension") else depth
        text = SHAPES[name](depth)
        if rng.random() < 0.3:
            text = mutate(rng, text, 1)
        return text
    if kind == "mutant":
        return mutate(rng, rng.choice(seed_texts), rng.randint(1, 6))
    if kind == "soup":
        return "".join(rng.choice(TOKENS) + rng.choice(["", " "]) for _ in range(rng.randint(1, 400)))
    if kind == "bytes":
        base = rng.choice(seed_texts).encode()
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        at = rng.randrange(len(base) + 1)
        return base[:at] + junk + base[at:]
    lines = [rng.choice(LOADS).replace("{}", str(rng.randrange(max(i, 1)))) for _ in range(rng.randint(1, 3))]
    return "".join(lines) + mutate(rng, rng.choice(seed_texts), rng.randint(0, 2))


def mutate(rng, text, times):
    for _ in range(times):
        n = len(text)
        a = rng.randrange(n + 1)
        b = min(n, a + rng.randint(0, 80))
        op = rng.randrange(7)
        if op == 0:
            text = text[:a] + text[b:]  # cut
        elif op == 1:
            text = text[:a] + rng.choice(TOKENS) + text[a:]  # insert a token
        elif op == 2:
            text = text[:a] + text[a:b] * rng.randint(2, 300) + text[b:]  # repeat a span
        elif op == 3:
            text = text[:a]  # truncate
        elif op == 4:
            lines = text.split("\n")
            k = rng.randrange(len(lines))
            lines[k] = " " * rng.randint(1, 9) + lines[k]  # re-indent a line
            text = "\n".join(lines)
        elif op == 5:
            text = text[:a] + rng.choice(["(", "[", "{", "-", "not "]) * rng.randint(1, 3000) + text[a:]
        else:
            lines = text.split("\n")
            rng.shuffle(lines)  # shuffle lines
            text = "\n".join(lines)
    return text


def run(count, seed, quiet=False):
    """Generate `count` files, check and load each; returns (rejected, accepted). Raises on a failure."""
    sys.path.insert(0, str(REPO / "src/python"))
    from flowmetal.errors import LoadError, UserError
    from flowmetal.lang.check import check
    from flowmetal.lang.loader import Program
    from flowmetal.lang.workspace import DiskSources

    rng = random.Random(seed)
    seed_texts = [p.read_text(encoding="utf-8") for p in SEEDS]
    rejected = accepted = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        (root / ".flowmetal").write_text("")
        (Path(tmp) / "outside.star").write_text("x = 1\n")
        os.symlink(Path(tmp) / "outside.star", root / "outside_link.star")
        for name, text in FIXED.items():
            (root / name).write_text(text)
        started = time.monotonic()
        for i in range(count):
            name = f"f{i}.star"
            content = generate(rng, i, seed_texts)
            path = root / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8", errors="surrogatepass")
            report = check(root, [str(path)])
            errors = [d for d in report.errors]
            for d in report.diagnostics:
                assert d.line >= 1 and d.col >= 1 and d.file != "<unknown>", (name, d.render())
                assert ":" in d.render().split(" ", 1)[0], (name, d.render())
            program = Program(DiskSources(root))
            try:
                program.load(name)
                loaded = True
            except LoadError as e:
                loaded = False
                own = [d for d in e.diagnostics if d.file == name]
                assert own, (name, "rejected without a diagnostic in the file itself", [d.render() for d in e.diagnostics])
            except UserError as e:
                raise AssertionError(f"{name}: a UserError without diagnostics: {e}") from None
            finally:
                program.close()
            if not loaded:
                rejected += 1
                assert any(d.file == name for d in errors), (name, "the loader rejects it but check reports nothing in it")
            else:
                accepted += 1
            if not quiet and (i + 1) % 1000 == 0:
                print(f"{i + 1} files, {rejected} rejected, {time.monotonic() - started:.1f}s", file=sys.stderr)
    return rejected, accepted


@pytest.mark.timeout(120)
def test_fuzz_checker_and_loader_do_not_crash():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src/python")}
    started = time.monotonic()
    r = subprocess.run([sys.executable, __file__, "--files", "2000", "--seed", "12"], capture_output=True, text=True,
                       env=env, timeout=110)
    elapsed = time.monotonic() - started
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"exit {r.returncode} (-11 is a segfault):\n{out[-4000:]}"
    assert "Traceback" not in out and "panicked at" not in out and "stack backtrace" not in out, out[-4000:]
    assert "2000 files checked and loaded" in r.stdout
    rejected = int(r.stdout.split("rejected=")[1].split()[0])
    assert rejected >= 1000  # most generated files are broken; each was reported at file:line:col
    assert elapsed < 60, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rejected, accepted = run(args.files, args.seed)
    print(f"{args.files} files checked and loaded: rejected={rejected} accepted={accepted}")


if __name__ == "__main__":
    main()
