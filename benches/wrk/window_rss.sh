#!/usr/bin/env bash
# Peak server RSS with a known number of pairs in the nonce window: wrk
# sends 2 × PAIRS_PER_THREAD signed requests with fresh nonces (then only
# replays, which keygate refuses without remembering them), at the default
# 300 s skew so that every pair stays in the window. Comparing builds at
# the same count matters: the window's tables grow in steps (a sixth to a
# fifth at a time, src/store/fingerprint_table.rs), so a few percent more
# pairs can mean larger tables.
#
#   benches/wrk/window_rss.sh                      # 1.9 M per thread: 3.8 M pairs
#   PAIRS_PER_THREAD=500000 benches/wrk/window_rss.sh
set -euo pipefail
per_thread=${PAIRS_PER_THREAD:-1900000}
source "$(dirname "$0")/servers.sh"
start_server durable "$per_thread"
# Long enough to use up every header at ~45k signed req/s.
seconds=$((2 * per_thread / 45000 + 5))
echo "sending $((2 * per_thread)) signed requests with fresh nonces, then replays, for ${seconds}s"
AUTH_FILE=$work/durable/auth TARGET=/v1/whoami wrk -t2 -c64 -d${seconds}s -s "$here/replay.lua" "http://127.0.0.1:${port[durable]}" |
  grep -E "requests in|Non-2xx"
pairs=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select coalesce(sum(length(entries) - length(replace(entries, char(10), \"\"))), 0) from nonce_batches").fetchone()[0])' "$work/durable/keygate.db")
echo "nonce window: $pairs pairs"
echo "server peak RSS: $(grep VmHWM /proc/${pid[durable]}/status | awk '{print $2, $3}'), now: $(grep VmRSS /proc/${pid[durable]}/status | awk '{print $2, $3}')"
