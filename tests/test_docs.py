"""The documentation is checked like code.

1. doc/cli.md is generated from `--help` by tools/gen_cli_doc.py. The tests
   fail when a command or option named in doc/cli.md does not exist, when one
   that exists is missing from it, or when regenerating would change it. The
   fix is always: run python3 tools/gen_cli_doc.py.

2. Code blocks that are complete workflow files must pass `flowmetal check`.
   The rule: in README.md and doc/*.md, a fenced code block whose info string
   is `python` or `starlark` and whose FIRST line is a comment
   `# file: PATH.star` is a complete file named PATH (a path relative to a
   workspace root, like `jobs/invoice.star`). All such blocks of one document
   are written into one fresh workspace (a directory with a `.flowmetal`
   marker), so they may load each other by label, and the real CLI's
   `flowmetal check` on that workspace must exit 0 with no error and no
   warning. Any other code block is a fragment and is not checked. A
   document may not name the same file twice.

3. Links from README.md and doc/*.md to files of the repository point at
   files that exist.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "doc"
DOCUMENTS = [REPO / "README.md", *sorted(DOC.glob("*.md"))]
REGENERATE = "run python3 tools/gen_cli_doc.py"

if not (DOC / "cli.md").is_file() or not (REPO / "tools" / "gen_cli_doc.py").is_file():
    # A tree without the docs (a Bazel runfiles tree whose //:pytest data lacks
    # doc/**, tools/** and README.md): nothing to check here.
    pytest.skip("doc/ and tools/ are not in this tree", allow_module_level=True)

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_FILE_LINE = re.compile(r"^#\s*file:\s*(?P<name>\S+)\s*$")


def fenced_blocks(text):
    """(info string, body, line number of the opening fence) for every fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), i + 1
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][len(m["indent"]):] if lines[i].startswith(m["indent"]) else lines[i])
            i += 1
        out.append((info, "\n".join(body) + "\n", start))
        i += 1
    return out


def star_files(doc):
    """{PATH: text} of the blocks of `doc` that are complete .star files (see the module docstring)."""
    files = {}
    for info, body, line in fenced_blocks(doc.read_text(encoding="utf-8")):
        if info.split()[:1] not in (["python"], ["starlark"]):
            continue
        first = body.split("\n", 1)[0]
        m = _FILE_LINE.match(first)
        if not m:
            assert not first.lstrip().startswith("# file"), \
                f"{doc.name}:{line}: malformed file line {first!r}; write '# file: NAME.star'"
            continue
        name = m["name"]
        assert name.endswith(".star") and not name.startswith(("/", "..")), \
            f"{doc.name}:{line}: '# file: {name}' must name a .star file inside the workspace"
        assert name not in files, f"{doc.name}:{line}: the document names {name} twice"
        files[name] = body
    return files


# --- 1. doc/cli.md is generated ---------------------------------------------------------


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_doc", REPO / "tools" / "gen_cli_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented():
    """{command path: set of option names} as doc/cli.md shows them.

    Sections are headed `## flowmetal CMD`; options are the lines of their
    `text` block that click indents by exactly two spaces and start with "-".
    """
    text = (DOC / "cli.md").read_text(encoding="utf-8")
    out = {}
    sections = re.split(r"^## (flowmetal(?: [\w-]+)*)\s*$", text, flags=re.M)
    for title, section in zip(sections[1::2], sections[2::2]):
        options = set()
        for info, block, _ in fenced_blocks(section):
            if info != "text":
                continue
            for ln in block.splitlines():
                if re.match(r"^  -", ln):
                    head = re.split(r"\s{2,}", ln.strip())[0]
                    options.update(re.findall(r"(?:^|[\s,])(--?[A-Za-z][\w-]*)", head))
        out[tuple(title.split())] = options
    return out


def test_cli_doc_names_exactly_the_commands_and_options_that_exist():
    gen = _generator()
    actual = {path: gen.options(cmd) for path, cmd in gen.commands()}
    documented = _documented()
    documented.pop(("flowmetal",), None)
    missing = sorted(" ".join(p) for p in set(actual) - set(documented))
    stale = sorted(" ".join(p) for p in set(documented) - set(actual))
    assert not missing, f"doc/cli.md lacks command(s) {missing}: {REGENERATE}"
    assert not stale, f"doc/cli.md documents command(s) {stale} that do not exist: {REGENERATE}"
    for path, options in actual.items():
        name = " ".join(path)
        assert options - documented[path] == set(), \
            f"doc/cli.md lacks option(s) {sorted(options - documented[path])} of `{name}`: {REGENERATE}"
        assert documented[path] - options == set(), \
            f"doc/cli.md shows option(s) {sorted(documented[path] - options)} that `{name}` does not have: {REGENERATE}"


def test_cli_doc_is_what_the_generator_writes():
    current = (DOC / "cli.md").read_text(encoding="utf-8")
    assert current == _generator().render(), f"doc/cli.md is out of date: {REGENERATE}"


def test_every_command_is_described_in_the_docs_beyond_cli_md():
    """A command in --help but in none of the hand-written pages is a gap in the docs."""
    gen = _generator()
    prose = "\n".join(p.read_text(encoding="utf-8") for p in DOCUMENTS if p.name != "cli.md")
    for path, _ in gen.commands():
        name = " ".join(path)
        assert f"`{name}" in prose or f"{name} " in prose, f"no page in doc/ or README.md mentions `{name}`"


# --- 2. code blocks that are complete .star files pass flowmetal check --------------


# Only the pages that hold complete .star blocks (a page without any has nothing to check).
@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if star_files(d)], ids=lambda p: p.name)
def test_star_code_blocks_pass_flowmetal_check(doc, tmp_path):
    files = star_files(doc)
    root = tmp_path / "ws"
    (root / ".flowmetal").mkdir(parents=True)
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "flowmetal", "check", "."], cwd=root,
                       capture_output=True, text=True, timeout=60)
    report = f"flowmetal check of the code blocks of {doc.relative_to(REPO)}:\n{r.stdout}{r.stderr}"
    assert r.returncode == 0, report
    assert r.stdout.strip() == "", report
    assert f"{len(files)} file(s) checked" in r.stderr and "0 error(s), 0 warning(s)" in r.stderr, report


def test_readme_tour_is_a_checked_file():
    assert star_files(REPO / "README.md"), "the README's tour must be a '# file: NAME.star' block"


def test_block_rule_recognises_files_and_skips_fragments(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "```python\n# file: a.star\ndef main():\n    return 1\n```\n\n"
        "```python\nload(\"//a.star\", \"main\")   # a fragment\n```\n\n"
        "~~~starlark\n# file: lib/b.star\nX = 1\n~~~\n\n"
        "```sh\n# file: not-star.star\n```\n"
    )
    assert star_files(doc) == {"a.star": "# file: a.star\ndef main():\n    return 1\n", "lib/b.star": "# file: lib/b.star\nX = 1\n"}


# --- 3. links to repository files exist --------------------------------------------------


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_point_at_existing_files(doc):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)} links to missing file(s): {broken}"
