"""One Bazel test target per pytest module of this repository (see doc/bazel.md)."""

# What every test module may read at run time: the tests, the examples, the docs
# they check, the tools they call, and the project files pytest reads.
_DATA_GLOBS = ["tests/**", "examples/**", "doc/**", "tools/**", "bench/**"]
_DATA_EXCLUDE = [
    "**/__pycache__/**",
    "**/*.pyc",
    "**/.pytest_cache/**",
    "**/.flowmetal/**",
    "**/*.db",
    "**/*.db-wal",
    "**/*.db-shm",
]

def pytest_modules(srcs):
    """Declares `//:<module>` (for tests/test_x.py: `//:test_x`) for each file in `srcs`.

    Each target runs `tests/bazel_pytest.py <file>`, i.e. `python -m pytest <file>` from the
    repository root, unsandboxed ("local": the tests spawn the CLI, servers and databases)
    and never cached ("external": the Python dependencies live outside Bazel).
    """
    data = native.glob(_DATA_GLOBS, exclude = _DATA_EXCLUDE) + [
        "pyproject.toml",
        "README.md",
        "//examples:files",  # (examples/ is a package of its own: its BUILD declares the workflow tests)
    ]
    for src in srcs:
        name = src.split("/")[-1][:-len(".py")]
        native.py_test(
            name = name,
            srcs = ["tests/bazel_pytest.py"],
            main = "tests/bazel_pytest.py",
            args = [src],
            data = data,
            python_version = "PY3",
            srcs_version = "PY3",
            tags = ["external", "local"],
            timeout = "eternal",
            deps = [":flowmetal"],
        )
