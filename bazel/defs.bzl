"""Bazel rules for Flowmetal workspaces (see doc/bazel.md).

    load("@flowmetal//bazel:defs.bzl", "flowmetal_test")   # this repository: "//bazel:defs.bzl"

    flowmetal_test(
        name = "backup_test",
        srcs = ["backup_test.star"],   # *_test.star files (and *.journal.json golden journals)
        deps = ["backup.star"],        # the .star files they load
    )

declares a test target that runs `python3 -m flowmetal test` on `srcs`: each test_*
function on a fresh store with a virtual clock and fakes (doc/testing.md). Bazel's
test.xml is the run's JUnit XML, so each workflow test shows up in Bazel's report.
"""

def flowmetal_test(name, srcs, deps = [], data = [], **kwargs):
    """A test target running the Flowmetal tests (and golden journals) in `srcs`.

    `deps` are the workflow files (or filegroups of them) the tests load; they are
    copied with `srcs` into a scratch workspace, keeping their paths from the
    repository root, so labels like "//jobs/backup.star" resolve as in the source tree.
    """
    main = Label("//bazel:flowmetal_test_main.py")
    kwargs.setdefault("size", "small")
    native.py_test(
        name = name,
        srcs = [main],
        main = main,
        args = ["$(rootpaths %s)" % s for s in srcs] + ["--"] + ["$(rootpaths %s)" % d for d in deps + data],
        data = srcs + deps + data,
        python_version = "PY3",
        srcs_version = "PY3",
        deps = [Label("//:flowmetal")],
        **kwargs
    )
