"""Run pytest modules under `bazel test` (the //:test_* targets, one per module).

Bazel runs this file from the runfiles tree, where tests/, examples/,
pyproject.toml and the flowmetal package sit as in the source tree. It is the
same as `python -m pytest FILE...` from the repository root (with no FILE, the
whole of tests/), minus pytest's cache (the runfiles tree is not a place to write to).
"""

import os
import sys

# No __pycache__ (pytest's rewritten asserts included) next to runfiles.
sys.dont_write_bytecode = True


def main() -> int:
    import pytest

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests_dir)
    os.chdir(root)  # rootdir and pyproject.toml's [tool.pytest.ini_options]
    files = [a for a in sys.argv[1:] if a.endswith(".py")]
    options = [a for a in sys.argv[1:] if not a.endswith(".py")]
    args = ["-p", "no:cacheprovider", *(files or [tests_dir]), *options]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
