"""Only clock.py reads wall time, pauses, or draws randomness in the engine and the store.

Everything else takes the Clock it is given (clock.py), so that the test mode's
virtual clock can replace it. Precise: calls found in the syntax tree, not
mentions in docstrings or comments.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "python" / "flowmetal"

# module -> the functions of it that read wall time, pause, or draw randomness
FORBIDDEN = {
    "time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "sleep"},
    "random": {"random", "randint", "randrange", "choice", "uniform", "getrandbits", "SystemRandom", "Random"},
    "uuid": {"uuid1", "uuid4"},
    "secrets": {"token_hex", "token_bytes", "randbits", "choice", "token_urlsafe"},
    "datetime": {"now", "utcnow", "today"},
}

# Files that still read it, each with the reason; this list may only shrink.
NOT_YET = {
    "engine/effects/sh.py": "measures a command's duration and kill grace in real time",
    "engine/effects/http.py": "measures a request's duration and its Retry-After in real time",
}

# Files whose randomness is a capability (the server secret, lease tokens): it must come
# from the secrets module (the OS's CSPRNG), never from a source a test could inject.
CAPABILITIES = {"engine/deferred.py", "engine/tasks.py"}


def calls(source, name="<src>"):
    """`module.function(` calls of FORBIDDEN in `source` (import aliases resolved)."""
    tree = ast.parse(source)
    alias = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN:
            for a in node.names:
                if a.name in FORBIDDEN[node.module]:
                    alias[a.asname or a.name] = f"{node.module}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            module = alias.get(f.value.id, f.value.id).split(".")[-1]
            if f.attr in FORBIDDEN.get(module, ()):
                out.append(f"{name}:{node.lineno}: {module}.{f.attr}()")
        elif isinstance(f, ast.Name) and "." in alias.get(f.id, ""):
            out.append(f"{name}:{node.lineno}: {alias[f.id]}()")
    return out


def test_only_clock_py_reads_wall_time_in_engine_and_store():
    found = []
    for sub in ("engine", "store"):
        for path in sorted((PKG / sub).rglob("*.py")):
            rel = str(path.relative_to(PKG))
            if rel not in NOT_YET:
                found += [c for c in calls(path.read_text(), rel)
                          if not (rel in CAPABILITIES and ": secrets." in c)]
    assert found == [], "use the injected clock (flowmetal.clock) instead:\n" + "\n".join(found)


def test_the_check_finds_what_it_must_and_nothing_else():
    source = ('"""time.time() in a docstring"""\nimport time\nimport uuid as _u\nfrom time import monotonic\n'
              "x = time.time()  # time.sleep(1) in a comment\ny = _u.uuid4()\nz = monotonic()\nw = clock.now()\n")
    assert calls(source) == ["<src>:5: time.time()", "<src>:6: uuid.uuid4()", "<src>:7: time.monotonic()"]
    assert calls((PKG / "clock.py").read_text())  # clock.py is the one that does
