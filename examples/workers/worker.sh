#!/bin/sh
# An outside worker for task(QUEUE, payload) (doc/workers.md): runs COMMAND with the payload (JSON) on stdin,
# completes the task with COMMAND's stdout (JSON), or fails it with its stderr (retryable if it exits 75,
# EX_TEMPFAIL). It heartbeats while COMMAND runs; COMMAND gets FLOWMETAL_IDEMPOTENCY_KEY and FLOWMETAL_TASK_ATTEMPT.
# Usage: FLOWMETAL_URL=http://127.0.0.1:8420 FLOWMETAL_TOKEN=... worker.sh QUEUE COMMAND...
set -u
queue=$1; shift
api="${FLOWMETAL_URL:-http://127.0.0.1:8420}/api/v1/tasks"; me="${FLOWMETAL_WORKER:-sh-$(hostname)-$$}"
claim=$(jq -nc --arg q "$queue" --arg w "$me" '{worker: $w, queues: [$q], wait: 30}')
err=$(mktemp); trap 'rm -f "$err"' EXIT
post() { curl -sf -H "Authorization: Bearer $FLOWMETAL_TOKEN" -H 'Content-Type: application/json' -d "$2" "$api/$1"; }
while :; do
  got=$(post claim "$claim") || { sleep 1; continue; }
  [ -n "$got" ] || continue                                    # 204: nothing came within the wait
  eval "$(printf '%s' "$got" | jq -r '.tasks[0] | @sh "id=\(.id) key=\(.idempotency_key) attempt=\(.attempt)
    token=\(.lease_token) every=\((.heartbeat // 60) / 3) payload=\(.payload | tojson)"')"
  lease="{\"lease_token\": \"$token\"}"                       # (a token is URL-safe base64)
  (while sleep "$every" && kill -0 $$ 2>/dev/null; do post "$id/heartbeat" "$lease" >/dev/null || exit; done) & beat=$!
  export FLOWMETAL_IDEMPOTENCY_KEY="$key" FLOWMETAL_TASK_ATTEMPT="$attempt"
  if out=$(printf '%s' "$payload" | "$@" 2>"$err") \
      && body=$(jq -nc --arg l "$token" --argjson r "$out" '{lease_token: $l, result: $r}' 2>"$err"); then
    path=complete
  else
    code=$?; [ -s "$err" ] || echo "exit status $code" >"$err"; path=fail
    body=$(jq -nc --arg l "$token" --rawfile e "$err" --argjson t "$([ $code = 75 ] && echo true || echo false)" \
      '{lease_token: $l, error: $e, retryable: $t}')
  fi
  kill "$beat" 2>/dev/null; post "$id/$path" "$body" >/dev/null
done
