"""Secrets: never stored by value in any run of a tree, masked across log pieces, and replay
gives the program what it saw live (issue 12 items 5, 6, 7)."""

import json

from conftest import run_id_of

TOK = "abcdefghi-secret"


def raw_bytes(fm):
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = fm.db.parent / (fm.db.name + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


REPLAY = f"""
def main():
    s = secret("TOK")
    e = env("TOK")
    o = sh("echo $TOK", env = {{"TOK": s}}).stdout.strip()
    sleep("1500ms")
    return {{"e": e == s, "o": o == s, "len": len(o)}}
"""


def test_replay_gives_the_program_what_it_saw_live(fm):
    fm.write("r.star", REPLAY)
    r = fm("run", "r.star", env={"TOK": TOK})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"e": True, "o": True, "len": len(TOK)}
    run_id = run_id_of(r.stderr)
    entries = fm.journal(run_id)
    sh_entry = [e for e in entries if e["builtin"] == "sh"][0]
    assert json.loads(sh_entry["result"])["stdout"] == "***\n"  # stored masked
    assert "secrets" in json.loads(sh_entry["data"])
    assert TOK.encode() not in raw_bytes(fm)
    r = fm("replay", run_id, env={"TOK": TOK})
    assert r.returncode == 0 and "no divergence" in r.stdout


CHILD = """
def child(tok, label):
    out = sh("echo child:$T", env = {"T": tok}).stdout.strip()
    print("child saw", tok)
    return {"label": label, "same": out == "child:" + tok, "n": len(tok)}

def main():
    s = secret("TOK")
    h = spawn(child, s, label = "bearer " + s)
    r = wait(h)
    return {"child": r.value, "ok": r.ok}
"""

CHAIN = """
def main(tok = None, round = 1):
    if tok == None:
        tok = secret("TOK")
    print("round", round, tok)
    if round < 2:
        continue_as_new(tok = tok, round = round + 1)
    return {"round": round, "n": len(tok), "same": tok == secret("TOK")}
"""


def test_secrets_reach_children_by_name_never_by_value(fm):
    fm.write("c.star", CHILD)
    r = fm("run", "c.star", env={"TOK": TOK})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["child"]["same"] and out["child"]["n"] == len(TOK)
    assert TOK not in r.stdout + r.stderr
    st = fm.store()
    try:
        [child] = st.list_runs(parent_id=run_id_of(r.stderr))
        assert json.loads(child["posargs"]) == [{"$secret": "TOK"}]
        assert json.loads(child["args"])["label"] == {"$secret": [[7, "TOK"]], "$text": "bearer ***"}
    finally:
        st.close()
    r2 = fm("logs", run_id_of(r.stderr))
    assert TOK not in r2.stdout + r2.stderr
    assert TOK.encode() not in raw_bytes(fm)


def test_secrets_survive_continue_as_new_by_name(fm):
    fm.write("chain.star", CHAIN)
    r = fm("run", "chain.star", env={"TOK": TOK})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"round": 2, "n": len(TOK), "same": True}
    assert TOK not in r.stdout + r.stderr
    assert TOK.encode() not in raw_bytes(fm)


def test_a_secret_too_short_to_mask_is_refused(fm):
    fm.write("s.star", 'def main():\n    return secret("TOK")\n')
    r = fm("run", "s.star", env={"TOK": "1"})
    assert r.returncode != 0
    assert "at least 6" in r.stderr and 'File "/' not in r.stderr  # a diagnostic, no Python traceback


LONG_LINE = r"""
def main():
    s = secret("TOK")
    sh("head -c 65530 /dev/zero | tr '\\0' a; printf %s \"$T\"; echo", env = {"T": s})
    return 1
"""


def test_a_secret_across_the_log_piece_boundary_is_masked_in_the_database(fm):
    fm.write("l.star", LONG_LINE)
    r = fm("run", "l.star", env={"TOK": TOK})
    assert r.returncode == 0, r.stderr
    data = raw_bytes(fm)
    assert TOK.encode() not in data
    assert b"a" * 1000 + TOK[:6].encode() not in data  # no head of the secret at a piece's end
    st = fm.store()
    try:
        lines = [row["line"] for row in st.logs(run_id_of(r.stderr)) if row["stream"] == "stdout"]
    finally:
        st.close()
    assert len(lines) == 2 and lines[1].startswith("***")
