"""Run the whole pytest suite under `bazel test` (the //:pytest target).

Bazel runs this file from the runfiles tree, where tests/, examples/,
pyproject.toml and the flowmetal package sit as in the source tree. It is the
same as `python -m pytest tests/` from the repository root, minus pytest's
cache (the runfiles tree is not a place to write to).
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
    args = ["-p", "no:cacheprovider", tests_dir] + sys.argv[1:]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
