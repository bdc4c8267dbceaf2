#!/usr/bin/env bash
# End-to-end load run on this machine: starts a release keygate on a fresh
# database, creates a key, runs `keygate bench` (unauthenticated /healthz vs
# signed /v1/whoami with a fresh nonce each) and reports the server's peak
# RSS and the nonce log's size, sampled every 10 s.
#
#   benches/load.sh                               # normal durability, 64 connections, 10 s phases
#   DURABILITY=full benches/load.sh
#   SKEW=10 DURATION=60s benches/load.sh          # watch the nonce log stay bounded
#   THREADS=1 CONNECTIONS=64 benches/load.sh      # generator threads (default 2)
#
# Everything stays on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/keygate
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null; rm -rf "$work"' EXIT

export KEYGATE_DB=$work/keygate.db
export KEYGATE_ADMIN_TOKEN=load-test-admin-token-0123456789abcdef
export KEYGATE_DURABILITY=${DURABILITY:-normal}
export KEYGATE_SKEW_SECS=${SKEW:-300}
port=$((20000 + RANDOM % 12000))
"$bin" serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) 2>"$work/serve.log" &
server=$!
for _ in $(seq 50); do grep -q "keygate listening" "$work/serve.log" && break; sleep 0.1; done

app=$("$bin" app create load-test --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')
key=$("$bin" key create "$app" --json)
export KEYGATE_KEY_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$key")
export KEYGATE_SECRET=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$key")

# Pairs in the window (one line each in nonce_batches.entries) and batches.
rows() { python3 -c 'import sqlite3,sys; print("%d pairs in %d batches" % sqlite3.connect(sys.argv[1]).execute("select coalesce(sum(length(entries) - length(replace(entries, char(10), \"\"))), 0), count(*) from nonce_batches").fetchone())' "$KEYGATE_DB"; }
(
  for i in $(seq 1 100); do
    sleep 10
    kill -0 "$server" 2>/dev/null || exit 0
    echo "t+${i}0s nonce window: $(rows)" >>"$work/rows.log"
  done
) &
sampler=$!

echo "durability=$KEYGATE_DURABILITY skew=${KEYGATE_SKEW_SECS}s connections=${CONNECTIONS:-64} threads=${THREADS:-2} duration=${DURATION:-10s}"
"$bin" bench --url "http://127.0.0.1:$port" -c "${CONNECTIONS:-64}" --threads "${THREADS:-2}" -d "${DURATION:-10s}"
echo "server peak RSS: $(grep VmHWM /proc/$server/status | awk '{print $2, $3}')"
kill "$sampler" 2>/dev/null || true
cat "$work/rows.log" 2>/dev/null || true
echo "nonce window at the end: $(rows)"
