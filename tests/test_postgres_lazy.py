"""psycopg is imported only by the PostgreSQL store: SQLite commands never pay for it."""

import os
import subprocess
import sys


def test_version_and_a_sqlite_command_do_not_import_psycopg(tmp_path):
    for args in (["--version"], ["runs"]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "flowmetal", *args], cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                                "FLOWMETAL_DB": str(tmp_path / "x.db")},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        assert "flowmetal" in imported  # (the check sees our modules)
        assert not {m for m in imported if m.split(".")[0] in ("psycopg", "psycopg_pool")}, args

