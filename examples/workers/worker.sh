#!/bin/sh
# An outside worker for task("QUEUE", payload): runs `COMMAND` with the payload (JSON)
# on stdin and completes the task with its stdout (JSON), or fails it with its stderr.
# Usage: FLOWMETAL_URL=http://127.0.0.1:8420 FLOWMETAL_TOKEN=... worker.sh QUEUE COMMAND...
set -u
queue=$1; shift
api="${FLOWMETAL_URL:-http://127.0.0.1:8420}/api/v1/tasks"
auth="Authorization: Bearer $FLOWMETAL_TOKEN"
post() { curl -sf -H "$auth" -H 'Content-Type: application/json' -d "$2" "$api/$1"; }
while :; do
  task=$(post claim "$(jq -nc --arg q "$queue" '{queue: $q, wait: 30}')") || { sleep 1; continue; }
  [ -n "$task" ] || continue                       # 204: nothing within the wait
  id=$(printf '%s' "$task" | jq -r .id); lease=$(printf '%s' "$task" | jq -r .lease)
  export FLOWMETAL_IDEMPOTENCY_KEY="$id"
  if out=$(printf '%s' "$task" | jq -c .payload | "$@" 2>/tmp/worker.err.$$); then
    post "$id/complete" "$(jq -nc --arg l "$lease" --argjson r "$out" '{lease: $l, result: $r}')" >/dev/null
  else
    post "$id/fail" "$(jq -nc --arg l "$lease" --rawfile e /tmp/worker.err.$$ '{lease: $l, error: $e}')" >/dev/null
  fi
  rm -f /tmp/worker.err.$$
done
