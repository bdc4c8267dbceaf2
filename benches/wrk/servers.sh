# Sourced by every wrk script here: builds keygate, and start_server
# starts one on a fresh database, creates a key and pre-signs headers for it.
# Also the helpers the scripts share to read wrk's output and /proc.
#
# NONCE_MODES (default `durable`) chooses the build: any other mode needs
# the benchmark-only `bench-decomposition` feature, which accepts nonces
# that are not durable. That build goes to its own target directory
# (target/bench-decomposition) so that it can never be mistaken for
# target/release/keygate.
#
# KEYGATE_BIN=path runs that binary instead of building one, to compare
# two builds in one session (BENCHMARKS.md, round 15).
#
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
modes=${NONCE_MODES:-durable}
if [ -n "${KEYGATE_BIN:-}" ]; then
  # A binary built elsewhere (another commit, for a before/after
  # comparison in one session): used as it is, nothing is built.
  bin=$(cd "$OLDPWD" && readlink -f "$KEYGATE_BIN")
  [ -x "$bin" ] || { echo "KEYGATE_BIN=$KEYGATE_BIN is not an executable" >&2; exit 1; }
elif [ "$modes" = durable ]; then
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

# start_server MODE HEADERS: a server in $work/MODE, its pid and port in
# ${pid[MODE]} and ${port[MODE]}, and HEADERS pre-signed Authorization
# headers for GET $SIGNED_TARGET (default /v1/whoami) in each of
# $work/MODE/auth.1 and auth.2 (one file per wrk thread, see replay.lua).
start_server() {
  local mode=$1 dir=$work/$1 p key key_id secret first
  mkdir -p "$dir"
  export KEYGATE_DB=$dir/keygate.db
  p=$((20000 + RANDOM % 12000))
  KEYGATE_BENCH_NONCE_MODE=$mode "$bin" serve --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$((p + 1)) 2>"$dir/serve.log" &
  pid[$mode]=$!
  port[$mode]=$p
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  key=$("$bin" key create "$("$bin" app create wrk-load --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')" --json)
  key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$key")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$key")
  python3 "$here/presign.py" "$key_id" "$secret" "$2" "${SIGNED_TARGET:-/v1/whoami}" "$dir/auth.1" & first=$!
  python3 "$here/presign.py" "$key_id" "$secret" "$2" "${SIGNED_TARGET:-/v1/whoami}" "$dir/auth.2"
  wait $first
}

us() { # wrk's "123.45us" / "1.23ms" / "2.00s" -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/ && v !~ /us$/) n *= 1000000; printf "%.0f", n }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# CPU ticks (user + system) in a /proc stat file: a process's or a thread's.
cpu_ticks() { awk '{print $14 + $15}' "$1"; }
