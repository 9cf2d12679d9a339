"""The program of a `flowmetal_test` target (bazel/defs.bzl): `flowmetal test` on its files.

Arguments: the test files, `--`, then the files they load, as paths from the
workspace root (Bazel's rootpaths; the test runs in the runfiles tree, where they
are symlinks into the source tree). They are copied into a scratch workspace under
$TEST_TMPDIR, because a workspace refuses links that leave it; the JUnit XML goes
where Bazel asks ($XML_OUTPUT_FILE).
"""

import os
import shutil
import sys
import tempfile


def main(argv):
    if "--" in argv:
        cut = argv.index("--")
        tests, others = argv[:cut], argv[cut + 1:]
    else:
        tests, others = argv, []
    root = tempfile.mkdtemp(prefix="flowmetal-test-", dir=os.environ.get("TEST_TMPDIR"))
    for path in dict.fromkeys(tests + others):
        target = os.path.join(root, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
    args = ["test", "--root", root, *(os.path.join(root, t) for t in tests)]
    if os.environ.get("XML_OUTPUT_FILE"):
        args += ["--junit", os.environ["XML_OUTPUT_FILE"]]
    from flowmetal.cli import cli

    try:
        cli.main(args=args, prog_name="flowmetal")
    except SystemExit as e:
        return e.code or 0
    return 0


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    sys.exit(main(sys.argv[1:]))
