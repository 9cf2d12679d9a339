"""An outside worker for task(QUEUE, payload), in Python with httpx.

    FLOWMETAL_URL=http://127.0.0.1:8420 FLOWMETAL_TOKEN=... python3 worker.py QUEUE

`handle(payload)` does the work; its return value (JSON) completes the task, an
exception fails it. A thread renews the lease while it works. The task's id,
`<run id>:<sequence>`, is its idempotency key: a task offered again after a lost
lease carries the same one.
"""

import os
import sys
import threading

import httpx


def handle(payload):
    return {"echo": payload}  # the work


LEASE = 60  # seconds a claim lasts without a heartbeat


def heartbeat(client, task, done):
    while not done.wait(LEASE / 3):
        if client.post(f"/api/v1/tasks/{task['id']}/heartbeat", json={"lease": task["lease"]}).status_code == 409:
            return  # the lease is lost: another worker has the task now


def main(queue):
    client = httpx.Client(base_url=os.environ.get("FLOWMETAL_URL", "http://127.0.0.1:8420"), timeout=60,
                          headers={"Authorization": f"Bearer {os.environ['FLOWMETAL_TOKEN']}"})
    while True:
        r = client.post("/api/v1/tasks/claim", json={"queue": queue, "wait": 30, "lease": LEASE})
        if r.status_code == 204:
            continue
        r.raise_for_status()
        task, done = r.json(), threading.Event()
        threading.Thread(target=heartbeat, args=(client, task, done), daemon=True).start()
        try:
            body = {"lease": task["lease"], "result": handle(task["payload"])}
            path = "complete"
        except Exception as e:
            body, path = {"lease": task["lease"], "error": f"{type(e).__name__}: {e}"}, "fail"
        finally:
            done.set()
        client.post(f"/api/v1/tasks/{task['id']}/{path}", json=body)


if __name__ == "__main__":
    main(sys.argv[1])
