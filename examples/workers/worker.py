"""An outside worker for task(QUEUE, payload), in Python with httpx (doc/workers.md).

    FLOWMETAL_URL=http://127.0.0.1:8420 FLOWMETAL_TOKEN=... python3 worker.py QUEUE [COMMAND...]

`handle(task)` does the work: with a COMMAND it runs it as worker.sh does (the
payload as JSON on stdin, its JSON stdout the result, exit status 75 a retryable
failure, FLOWMETAL_IDEMPOTENCY_KEY and FLOWMETAL_TASK_ATTEMPT in its
environment); without one it echoes the payload (put your own code there). Its
return value completes the task; an exception fails it (Retryable: may be tried
again, under the task's retry policy). A thread heartbeats while it works, often
enough for the task's `heartbeat` interval. The task's idempotency key,
`<run id>:<sequence>`, is the same on every attempt: a task offered again after
a lost lease carries the same one.
"""

import json
import os
import subprocess
import sys
import threading

import httpx

LEASE = 60  # seconds a claim lasts without a heartbeat (the task's heartbeat interval may cap it)
TEMPFAIL = 75  # EX_TEMPFAIL: the command asks to be tried again


class Retryable(Exception):
    """A failure that may go away: the task may be offered again."""


def handle(task, command):
    if not command:
        return {"echo": task["payload"]}  # the work
    env = {**os.environ, "FLOWMETAL_IDEMPOTENCY_KEY": task["idempotency_key"],
           "FLOWMETAL_TASK_ATTEMPT": str(task["attempt"])}
    done = subprocess.run(command, input=json.dumps(task["payload"]), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise (Retryable if done.returncode == TEMPFAIL else RuntimeError)(message)
    return json.loads(done.stdout)


def heartbeat(client, task, done):
    every = min(LEASE, task.get("heartbeat") or LEASE) / 3
    while not done.wait(every):
        r = client.post(f"/api/v1/tasks/{task['id']}/heartbeat", json={"lease_token": task["lease_token"]})
        if r.status_code == 409:
            return  # the lease is lost: another worker has the task now


def main(queue, command):
    client = httpx.Client(base_url=os.environ.get("FLOWMETAL_URL", "http://127.0.0.1:8420"), timeout=90,
                          headers={"Authorization": f"Bearer {os.environ['FLOWMETAL_TOKEN']}"})
    me = os.environ.get("FLOWMETAL_WORKER") or f"py-{os.uname().nodename}-{os.getpid()}"
    while True:
        try:
            r = client.post("/api/v1/tasks/claim", json={"worker": me, "queues": [queue], "wait": 30, "lease": LEASE})
        except httpx.TransportError:
            threading.Event().wait(1)  # the server is away: try again
            continue
        if r.status_code == 204:
            continue
        r.raise_for_status()
        for task in r.json()["tasks"]:
            done = threading.Event()
            threading.Thread(target=heartbeat, args=(client, task, done), daemon=True).start()
            try:
                path, body = "complete", {"result": handle(task, command)}
            except Exception as e:
                path = "fail"
                body = {"error": f"{type(e).__name__}: {e}", "retryable": isinstance(e, Retryable)}
            finally:
                done.set()
            client.post(f"/api/v1/tasks/{task['id']}/{path}", json={"lease_token": task["lease_token"], **body})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
