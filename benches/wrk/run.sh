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
# Any mode but `durable` needs a build with the benchmark-only
# `bench-decomposition` feature, which accepts nonces that are not durable.
# It goes to its own target directory (target/bench-decomposition) so that
# it can never be mistaken for target/release/keygate.
#
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
modes=${NONCE_MODES:-durable}
if [ "$modes" = durable ]; then
  cargo build --release --quiet
  bin=$PWD/target/release/keygate
else
  cargo build --release --quiet --features bench-decomposition --target-dir target/bench-decomposition
  bin=$PWD/target/bench-decomposition/release/keygate
fi
here=$PWD/benches/wrk
work=$(mktemp -d)
declare -A pid port
trap 'kill ${pid[*]:-} 2>/dev/null; rm -rf "$work"' EXIT

export KEYGATE_ADMIN_TOKEN=load-test-admin-token-0123456789abcdef
export KEYGATE_DURABILITY=${DURABILITY:-normal}
export KEYGATE_LOG=warn
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-64}
# More headers than one wrk thread goes through in all signed phases (a
# thread sends about half of a phase's requests, at up to ~100k req/s in all
# here). Running out means replays, which keygate refuses (wrk counts them
# as non-2xx).
per_thread=$((rounds * duration * 60000 + 50000))

start_server() { # mode: a server on its own database, a key, and pre-signed headers
  local mode=$1 dir=$work/$1 p key key_id secret first
  mkdir -p "$dir"
  export KEYGATE_DB=$dir/keygate.db
  p=$((20000 + RANDOM % 20000))
  KEYGATE_BENCH_NONCE_MODE=$mode "$bin" serve --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$((p + 1)) 2>"$dir/serve.log" &
  pid[$mode]=$!
  port[$mode]=$p
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  key=$("$bin" key create "$("$bin" app create wrk-load --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')" --json)
  key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$key")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$key")
  python3 "$here/presign.py" "$key_id" "$secret" $per_thread /v1/whoami "$dir/auth.1" & first=$!
  python3 "$here/presign.py" "$key_id" "$secret" $per_thread /v1/whoami "$dir/auth.2"
  wait $first
}
for mode in $modes; do start_server "$mode"; done

server_ticks() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }
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
