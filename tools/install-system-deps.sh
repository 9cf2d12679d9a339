#!/usr/bin/env bash
# Installs what the test suite needs that pip cannot give, when it is missing:
# PostgreSQL server binaries (initdb, pg_ctl) for the PostgreSQL store tests,
# Chromium for the browser tests, curl and jq for the shell worker example.
# Does nothing when everything is there. Debian/Ubuntu (apt-get) only.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install ${missing[*]} yourself" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "install-system-deps: not root and no sudo; install ${missing[*]} yourself" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}" >/dev/null
