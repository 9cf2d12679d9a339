"""schemathesis against the OpenAPI document a real `flowmetal serve` serves:
no 5xx, and every response matches the document (status, content type, schema)."""

import shutil
import subprocess

import pytest

from serverutil import Served, workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FLOWS = 'def main(name = "world"):\n    log("hi", name)\n    return name\n\ndef waits():\n    return wait_signal("go")\n'


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    st = shutil.which("st") or shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    root, db = workspace(tmp_path, {"hello.star": FLOWS})
    s = Served(root, db, "hello.star")
    token = s.token("fuzz", "write")
    s.start()
    try:
        with s.client(token) as c:  # a few real runs, so the id routes also answer 200
            for _ in range(3):
                c.post("/api/v1/runs", json={"target": "hello.star:main"})
        out = subprocess.run(
            [st, "run", f"{s.url}/api/v1/openapi.json", "-H", f"Authorization: Bearer {token}",
             "--max-examples", "25", "--generation-deterministic", "--phases", "examples,coverage,fuzzing",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance,response_headers_conformance,negative_data_rejection",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=220, cwd=tmp_path)
        report = out.stdout + out.stderr
        assert out.returncode == 0, report[-6000:]
        assert "generated" in report
        assert "Traceback" not in s.err() and "internal error" not in s.err()
    finally:
        assert s.stop() == 0
