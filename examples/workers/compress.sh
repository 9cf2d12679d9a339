#!/bin/sh
# The work of examples/compress.star's tasks, for worker.sh or worker.py: compress the file the payload names
# ({"path", "format": "gz" | "xz"}) next to it and answer {"path", "output", "bytes_in", "bytes_out", "sha256"}.
# Idempotent: it writes a temporary file named by the task's idempotency key and renames it into place, so a
# repeat (a task offered again after a lost lease) leaves the same output. Exit status 2: a failure no retry
# mends (no such file); 75 (EX_TEMPFAIL, retryable): compressing failed (a full disk, say).
set -eu
eval "$(jq -r '@sh "path=\(.path) format=\(.format // "gz")"')"
case "$format" in
  gz) set -- gzip -9 -n -c ;;
  xz) set -- xz -6 -T1 -c ;;
  *) echo "unknown format $format" >&2; exit 2 ;;
esac
[ -f "$path" ] || { echo "no such file: $path" >&2; exit 2; }
out="$path.$format"; tmp="$out.${FLOWMETAL_IDEMPOTENCY_KEY:-$$}.tmp"
"$@" "$path" >"$tmp" || { rm -f "$tmp"; echo "compressing $path failed" >&2; exit 75; }
mv -f "$tmp" "$out"
jq -nc --arg p "$path" --arg o "$out" --argjson i "$(wc -c <"$path")" --argjson b "$(wc -c <"$out")" \
  --arg s "$(sha256sum "$out" | cut -d ' ' -f 1)" '{path: $p, output: $o, bytes_in: $i, bytes_out: $b, sha256: $s}'
