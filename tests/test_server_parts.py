"""Parts of the server that a running server cannot be made to show: a bug's 500,
and that the CLI does not import the server stack."""

import asyncio
import subprocess
import sys

import httpx

from flowmetal.server.errors import CatchAll


def test_a_bug_answers_500_json_and_the_traceback_goes_to_stderr(capsys):
    async def broken(scope, receive, send):
        raise RuntimeError("secret internals")

    async def call():
        transport = httpx.ASGITransport(app=CatchAll(broken))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/api/v1/runs")

    resp = asyncio.run(call())
    assert resp.status_code == 500
    assert set(resp.json()) == {"error"} and "secret internals" not in resp.text and "Traceback" not in resp.text
    err = capsys.readouterr().err
    assert "Traceback" in err and "secret internals" in err


def test_the_cli_imports_no_server_stack():
    code = ("import sys, flowmetal.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', 'prometheus_client'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr
