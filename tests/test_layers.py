"""The package's layering, as `lint-imports` (import-linter) checks it from pyproject.toml.

cli (and server) > schedule > engine > lang, store > helpers > errors, model: a
module may import from its own layer's allowed siblings and from lower layers,
never from a higher one. Both tests run the real tool on a copy of the package
(so no cache is written into the checkout, and the second can break it).
"""

import shutil
import subprocess
import sys

from conftest import REPO

LINT = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
        "--no-cache", "--no-logo"]


def _copy(tmp_path):
    shutil.copytree(REPO / "src" / "python" / "flowmetal", tmp_path / "src" / "python" / "flowmetal",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root):
    return subprocess.run(LINT, cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src" / "python")},
                          capture_output=True, text=True, timeout=120)


def test_the_layers_contract_is_kept(tmp_path):
    r = _lint(_copy(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 1 kept, 0 broken." in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    module = root / "src" / "python" / "flowmetal" / "store" / "base.py"
    module.write_text(module.read_text() + "\n\ndef _upward():\n    from flowmetal.schedule import daemon  # noqa\n")
    r = _lint(root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "BROKEN" in r.stdout
    assert "flowmetal.store is not allowed to import flowmetal.schedule" in r.stdout
    assert "flowmetal.store.base -> flowmetal.schedule.daemon" in r.stdout


def test_lang_does_not_import_schedule_or_engine_outside_the_listed_exceptions(tmp_path):
    """The workspace discovery that `flowmetal schedule` uses lives in lang and imports neither."""
    root = _copy(tmp_path)
    module = root / "src" / "python" / "flowmetal" / "lang" / "discovery.py"
    module.write_text(module.read_text() + "\n\ndef _upward():\n    from flowmetal.engine import runs  # noqa\n")
    r = _lint(root)
    assert r.returncode == 1 and "flowmetal.lang.discovery -> flowmetal.engine.runs" in r.stdout, r.stdout
