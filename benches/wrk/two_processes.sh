#!/usr/bin/env bash
# Two keygate processes on one database file (the README's rolling restart,
# or several processes on one machine) against one process, with wrk and
# pre-signed requests for one key. The phases alternate for ROUNDS rounds:
#
#   one process    wrk -t2 -c64 against process A
#   two processes  wrk -t1 -c32 against A and wrk -t1 -c32 against B, at once
#
# and it prints each phase's signed req/s, latency percentiles, and the
# WAL file's size (how well the checkpoints keep up).
#
#   benches/wrk/two_processes.sh             # 3 rounds of 4 s phases
#   ROUNDS=5 DURATION=5 benches/wrk/two_processes.sh
#
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
set -euo pipefail
duration=${DURATION:-4}
rounds=${ROUNDS:-3}
per_thread=$((rounds * duration * 2 * 50000 + 50000))
source "$(dirname "$0")/servers.sh"
start_server durable "$per_thread"
db=$work/durable/keygate.db
# The second process: same database file, same key, its own ports.
port[second]=$((${port[durable]} + 2))
KEYGATE_DB=$db "$bin" serve --listen "127.0.0.1:${port[second]}" --admin-listen "127.0.0.1:$((${port[second]} + 1))" \
  2>"$work/second.log" &
pid[second]=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:${port[second]}/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:${port[second]}/healthz" >/dev/null || { cat "$work/second.log" >&2; exit 1; }
# replay.lua's thread N reads "$AUTH_FILE.N". One process: two threads,
# one file each. Two processes: one thread each, one file each.
ln -s "$work/durable/auth.1" "$work/one.1"
ln -s "$work/durable/auth.2" "$work/one.2"
ln -s "$work/durable/auth.1" "$work/first.1"
ln -s "$work/durable/auth.2" "$work/second.1"

next=0
signed() { # name port threads connections
  START=$next NEXT_FILE=$work/$1.next AUTH_FILE=$work/$1 TARGET=/v1/whoami \
    wrk -t"$3" -c"$4" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:$2" >"$work/$1.out"
}
report() { # label file...
  local label=$1 total=0 rate
  shift
  for out in "$@"; do
    rate=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out")
    total=$((total + rate))
    grep -q Non-2xx "$out" && echo "  $(grep Non-2xx "$out" | xargs) in $out"
    printf '  %-14s %6s req/s  latency p50 %-8s p90 %-8s p99 %s\n' "$label" "$rate" \
      "$(awk '/ 50%/ {print $2}' "$out")" "$(awk '/ 90%/ {print $2}' "$out")" "$(awk '/ 99%/ {print $2}' "$out")"
  done
  [ $# -eq 1 ] || printf '  %-14s %6s req/s in all\n' "$label" "$total"
}
echo "durability=$KEYGATE_DURABILITY rounds=$rounds of ${duration}s phases (pre-signed, one key, one database file)"
for round in $(seq "$rounds"); do
  echo "round $round"
  signed one "${port[durable]}" 2 64
  next=$(cat "$work/one.next")
  report "one process" "$work/one.out"
  signed first "${port[durable]}" 1 32 & a=$!
  signed second "${port[second]}" 1 32 & b=$!
  wait "$a" "$b"
  next=$(( $(cat "$work/first.next") > $(cat "$work/second.next") ? $(cat "$work/first.next") : $(cat "$work/second.next") ))
  report "two processes" "$work/first.out" "$work/second.out"
  echo "  WAL file: $(( $(stat -c %s "$db-wal") / 1048576 )) MiB"
done
