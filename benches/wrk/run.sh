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
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/keygate
here=$PWD/benches/wrk
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null; rm -rf "$work"' EXIT

export KEYGATE_DB=$work/keygate.db
export KEYGATE_ADMIN_TOKEN=load-test-admin-token-0123456789abcdef
export KEYGATE_DURABILITY=${DURABILITY:-normal}
export KEYGATE_LOG=warn
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-64}
port=$((20000 + RANDOM % 20000))
"$bin" serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) 2>"$work/serve.log" &
server=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

app=$("$bin" app create wrk-load --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')
key=$("$bin" key create "$app" --json)
key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$key")
secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$key")
# More headers than one wrk thread uses in all signed phases (it sends about
# half of them, at up to ~90k req/s in all here).
per_thread=$((rounds * duration * 48000 + 50000))
python3 "$here/presign.py" "$key_id" "$secret" $per_thread /v1/whoami "$work/auth.1" & first=$!
python3 "$here/presign.py" "$key_id" "$secret" $per_thread /v1/whoami "$work/auth.2"
wait $first

server_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
declare -A requests ticks p99s
next_nonce=0
phase() { # name target
  local before after out n
  before=$(server_ticks)
  out=$(START=$next_nonce AUTH_FILE=$work/auth TARGET=$2 wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:$port")
  after=$(server_ticks)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  requests[$1]=$((${requests[$1]:-0} + n))
  ticks[$1]=$((${ticks[$1]:-0} + after - before))
  p99s[$1]="${p99s[$1]:-}$(echo "$out" | awk '/ 99%/ {print $2}') "
  if [ "$1" = signed ]; then next_nonce=$((next_nonce + n * 55 / 100 + 2000)); fi
  printf '  %-16s %-12s %9.0f req/s  p50 %-8s p99 %-8s server CPU %5.1f us/request%s\n' "$1" "$2" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '/ 50%/ {print $2}')" "$(echo "$out" | awk '/ 99%/ {print $2}')" \
    "$(echo "($after - $before) * 1000000 / $(getconf CLK_TCK) / $n" | bc -l)" \
    "$(echo "$out" | grep -q Non-2xx && echo "  ($(echo "$out" | grep Non-2xx | xargs))" || true)"
}
echo "durability=$KEYGATE_DURABILITY connections=$connections rounds=$rounds of ${duration}s phases (wrk -t2, pre-signed)"
for round in $(seq "$rounds"); do
  phase unauthenticated /healthz
  phase signed /v1/whoami
done
total=$((rounds * duration))
for name in unauthenticated signed; do
  printf '%-16s %9.0f req/s over %ss  server CPU %5.1f us/request  p99 by round: %s\n' "$name" \
    "$(echo "${requests[$name]} / $total" | bc -l)" "$total" \
    "$(echo "${ticks[$name]} * 1000000 / $(getconf CLK_TCK) / ${requests[$name]}" | bc -l)" "${p99s[$name]}"
done
printf 'signed / unauthenticated throughput: %.3f\n' "$(echo "${requests[signed]} / ${requests[unauthenticated]}" | bc -l)"
echo "server peak RSS: $(grep VmHWM /proc/$server/status | awk '{print $2, $3}')"
