#!/usr/bin/env bash
# What the access policy costs a signed request: one keygate on SQLite, two
# keys, phases alternating between them in one run on this machine.
#
# - "no policy": a key and an application without any policy (what every
#   deployment before policies runs);
# - "20-rule policy": the key's application allows 20 routes, the one that
#   matches GET /v1/whoami last (so every request walks all 20, normalising
#   its path first), the key has its own 20 rules the same way, 8 source
#   networks with 127.0.0.0/8 last, and both carry a rate limit far above
#   the load (so both GCRA limiters run on every request).
#
#   benches/wrk/policy.sh                  # 4 rounds of 5 s phases, 64 connections
#   ROUNDS=6 DURATION=10 benches/wrk/policy.sh
#
# Needs wrk. Everything stays on 127.0.0.1.
set -euo pipefail
duration=${DURATION:-5}
rounds=${ROUNDS:-4}
connections=${CONNECTIONS:-64}
per_thread=$((rounds * duration * 60000 + 50000))
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/keygate
here=$PWD/benches/wrk
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

export KEYGATE_ADMIN_TOKEN=load-test-admin-token-0123456789abcdef
export KEYGATE_LOG=warn
export KEYGATE_DB=$work/keygate.db
port=$((20000 + RANDOM % 12000))
"$bin" serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
admin() { curl -fsS -X "$1" -H "Authorization: Bearer $KEYGATE_ADMIN_TOKEN" \
  -H 'Content-Type: application/json' "http://127.0.0.1:$((port + 1))$2" ${3:+--data "$3"}; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# presign NAME: an application with a key, pre-signed headers in $work/NAME.auth.{1,2}.
declare -A key_of app_of
presign() {
  local app key first
  app=$(admin POST /admin/apps "{\"name\": \"wrk-$1\"}" | field app_id)
  key=$(admin POST "/admin/apps/$app/keys" '{}')
  app_of[$1]=$app
  key_of[$1]=$(echo "$key" | field key_id)
  python3 "$here/presign.py" "${key_of[$1]}" "$(echo "$key" | field secret)" "$per_thread" /v1/whoami "$work/$1.auth.1" & first=$!
  python3 "$here/presign.py" "${key_of[$1]}" "$(echo "$key" | field secret)" "$per_thread" /v1/whoami "$work/$1.auth.2"
  wait $first
}
presign none
presign policy
rules=$(python3 -c '
import json
rules = [{"methods": ["GET", "POST"], "path": f"/v1/resource{i}/*"} for i in range(19)]
rules.append({"methods": ["GET"], "path": "/v1/whoami"})
print(json.dumps(rules))')
admin PUT "/admin/apps/${app_of[policy]}/policy" \
  "{\"rules\": $rules, \"rate_limit\": {\"per_second\": 1000000, \"burst\": 1000000}}" >/dev/null
admin PUT "/admin/keys/${key_of[policy]}/policy" "{\"rules\": $rules,
  \"source_cidrs\": [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\", \"203.0.113.0/24\",
                     \"2001:db8::/32\", \"fd00::/8\", \"198.51.100.0/24\", \"127.0.0.0/8\"],
  \"rate_limit\": {\"per_second\": 1000000, \"burst\": 1000000}}" >/dev/null

declare -A requests next
phase() { # NAME
  local out n
  out=$(START=${next[$1]:-0} NEXT_FILE=$work/$1.next AUTH_FILE=$work/$1.auth TARGET=/v1/whoami \
    wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:$port")
  next[$1]=$(cat "$work/$1.next")
  if echo "$out" | grep -q Non-2xx; then echo "  $1: $(echo "$out" | grep Non-2xx | xargs)" >&2; exit 1; fi
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  requests[$1]=$((${requests[$1]:-0} + n))
  printf '  %-16s %9.0f req/s  p50 %s  p99 %s\n' "$1" "$(echo "$n / $duration" | bc -l)" \
    "$(echo "$out" | awk '/ 50%/ {print $2}')" "$(echo "$out" | awk '/ 99%/ {print $2}')"
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "connections=$connections rounds=$rounds of ${duration}s phases (wrk -t2, pre-signed GET /v1/whoami, SQLite)"
phase none >/dev/null # warm-up, not counted
requests[none]=0
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then phase none; phase policy; else phase policy; phase none; fi
done
echo
printf '20-rule policy: %.0f req/s against %.0f without: %.3f\n' \
  "$(echo "${requests[policy]} / ($rounds * $duration)" | bc -l)" \
  "$(echo "${requests[none]} / ($rounds * $duration)" | bc -l)" \
  "$(echo "${requests[policy]} / ${requests[none]}" | bc -l)"
