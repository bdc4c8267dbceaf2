#!/usr/bin/env bash
# Signed vs unauthenticated throughput with wrk, a load generator that is
# not keygate's own code. Every signed request is pre-signed (presign.py)
# with a fresh nonce, and both phases go through the same Lua script, so
# the generator's cost per request is the same in both and the ratio shows
# what keygate itself spends on a signature. Also reports the server's CPU
# time per request in each phase (from /proc), which is less noisy than
# throughput on a shared machine.
#
# The phases alternate (unauthenticated, signed, unauthenticated, ...) for
# ROUNDS rounds and the ratio is taken over the sums: this machine's speed
# drifts by 10-20% over tens of seconds, and alternating short phases keeps
# that drift out of the ratio.
#
#   benches/wrk/run.sh                       # 2 wrk threads, 64 connections, 3 rounds of 5 s phases
#   DURABILITY=full ROUNDS=5 DURATION=5 benches/wrk/run.sh
#
# Where a signed request's cost goes: NONCE_MODES runs one server per mode,
# each phase in turn within every round:
#
#   NONCE_MODES="durable writer-thread-only memory-only" benches/wrk/run.sh
#
#   durable             the real thing
#   writer-thread-only  the pair goes through the writer thread and back,
#                       without SQLite
#   memory-only         the request checks and remembers the pair itself
#
# Any mode but `durable` needs a benchmark-only build (see servers.sh).
#
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
set -euo pipefail
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-64}
# More headers than one wrk thread goes through in all signed phases (a
# thread sends about half of a phase's requests, at up to ~100k req/s in all
# here). Running out means replays, which keygate refuses (wrk counts them
# as non-2xx).
per_thread=$((rounds * duration * 60000 + 50000))
source "$(dirname "$0")/servers.sh"
for mode in $modes; do start_server "$mode" "$per_thread"; done

server_ticks() { cpu_ticks "/proc/${pid[$1]}/stat"; }
declare -A requests ticks p99s next_nonce
phase() { # mode name target
  local mode=$1 name=$2 before after out n
  before=$(server_ticks "$mode")
  out=$(START=${next_nonce[$mode]:-0} NEXT_FILE=$work/$mode/next AUTH_FILE=$work/$mode/auth TARGET=$3 \
    wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:${port[$mode]}")
  after=$(server_ticks "$mode")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  requests[$mode/$name]=$((${requests[$mode/$name]:-0} + n))
  ticks[$mode/$name]=$((${ticks[$mode/$name]:-0} + after - before))
  p99s[$mode/$name]="${p99s[$mode/$name]:-}$(echo "$out" | awk '/ 99%/ {print $2}') "
  if [ "$name" = signed ]; then next_nonce[$mode]=$(cat "$work/$mode/next"); fi
  printf '  %-18s %-16s %-12s %9.0f req/s  p50 %-8s p99 %-8s server CPU %5.1f us/request%s\n' "$mode" "$name" "$3" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '/ 50%/ {print $2}')" "$(echo "$out" | awk '/ 99%/ {print $2}')" \
    "$(echo "($after - $before) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)" \
    "$(echo "$out" | grep -q Non-2xx && echo "  ($(echo "$out" | grep Non-2xx | xargs))" || true)"
}
echo "durability=$KEYGATE_DURABILITY connections=$connections rounds=$rounds of ${duration}s phases (wrk -t2, pre-signed) nonce modes: $modes"
for round in $(seq "$rounds"); do
  for mode in $modes; do
    phase "$mode" unauthenticated /healthz
    phase "$mode" signed /v1/whoami
  done
done
total=$((rounds * duration))
for mode in $modes; do
  [ "$modes" = durable ] || echo "$mode:"
  for name in unauthenticated signed; do
    printf '%-16s %9.0f req/s over %ss  server CPU %5.1f us/request  p99 by round: %s\n' "$name" \
      "$(echo "${requests[$mode/$name]} / $total" | bc -l)" "$total" \
      "$(echo "${ticks[$mode/$name]} * 1000000 / $(getconf CLK_TCK) / ${requests[$mode/$name]}" | bc -l)" "${p99s[$mode/$name]}"
  done
  printf 'signed / unauthenticated throughput: %.3f\n' "$(echo "${requests[$mode/signed]} / ${requests[$mode/unauthenticated]}" | bc -l)"
  echo "server peak RSS: $(grep VmHWM /proc/${pid[$mode]}/status | awk '{print $2, $3}')"
done
