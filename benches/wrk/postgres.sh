#!/usr/bin/env bash
# Signed throughput on PostgreSQL against SQLite, all in one run on this
# machine: one keygate on SQLite, one keygate on PostgreSQL, and two
# keygate processes on one PostgreSQL database (each with half of the
# connections, one public worker and one of the wrk process's two threads,
# so that every phase runs two workers and one wrk process of two threads
# on the two cores). Every server, PostgreSQL and wrk
# share the same cores, as they would on a small two-gateway deployment's
# database host, so the figures are what this machine does, not what each
# part could do alone.
#
# PostgreSQL runs with its defaults (fsync and synchronous_commit on):
# every batch of nonces is flushed to its WAL before any request in it is
# answered. SQLite runs with KEYGATE_DURABILITY (default normal).
#
#   benches/wrk/postgres.sh                    # 3 rounds of 5 s phases at 64 and at 256 connections
#   ROUNDS=5 DURATION=5 CONNECTIONS="64 128 256" benches/wrk/postgres.sh
#   SOAK=60 benches/wrk/postgres.sh            # also: the nonce table's size during 60 s on two instances
#   PREFILL=9000000 benches/wrk/postgres.sh    # the nonce table as full as at steady state (see below)
#   PG_SETTINGS="-c max_wal_size=8GB" ...      # server settings (README: "Sizing PostgreSQL")
#   KEYGATE_BIN=/tmp/before/keygate ...        # another build (before and after a change);
#                                              # named keygate: the CPU split finds it by name
#
# Needs wrk and Debian's postgresql package. Everything stays on 127.0.0.1.
set -euo pipefail
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
# Concurrency: each count of connections is a set of phases of its own.
# With few connections PostgreSQL is bound by its round trips (idle CPU,
# small batches); with many, every configuration is bound by the CPU, and
# the figures are what each can carry.
connection_counts=${CONNECTIONS:-64 256}
soak=${SOAK:-0}
# Pairs in the nonce table before the first phase. A table in service holds
# rate x window of them and more until the purge reaches them (at 30k
# req/s, 9 M over the 301 s window, 1.5 GB; up to 11 M);
# a fresh one holds none, and every insert lands in a small b-tree that
# stays in memory and is written in full at most once between checkpoints.
# With millions of pairs, random nonces touch a different b-tree page each
# time, and each first touch after a checkpoint writes the whole page to
# the WAL (the "full-page images" per request printed below).
prefill=${PREFILL:-0}
# Headers per wrk thread: more than a thread goes through (up to ~50k a
# second in a phase against one instance), else replays; the soak's two
# header sets also cover its 60 s at two instances.
per_thread=$((rounds * duration * 60000 * $(wc -w <<<"$connection_counts") + 50000))
per_thread_soak=$((per_thread + soak * 15000))
bin=${KEYGATE_BIN:-}
if [ -n "$bin" ]; then
  # Resolved before the cd below, so a relative path means the caller's.
  bin=$(realpath "$bin")
  [ "$(basename "$bin")" = keygate ] ||
    { echo "KEYGATE_BIN must name a file called keygate: the CPU split finds its processes by name" >&2; exit 1; }
fi
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=$PWD/target/release/keygate
fi
here=$PWD/benches/wrk
work=$(mktemp -d)
chmod 755 "$work"
pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Every port here is below Linux's ephemeral range (32768-60999), where a
# client socket (wrk's, keygate's to PostgreSQL) may already hold it: a
# run once failed on "Address already in use" for a port picked there.
pgport=$((10000 + RANDOM % 10000))
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
as_pg "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
# PG_SETTINGS: extra server settings, e.g. "-c shared_buffers=2GB".
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $pgport -k $work/pg -c listen_addresses=127.0.0.1 ${PG_SETTINGS:-}" start >/dev/null
psql() { "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -XAtq "$@"; }
psql -d postgres -c "CREATE DATABASE keygate"
pg_url="postgres://postgres@127.0.0.1:$pgport/keygate?sslmode=disable"

export KEYGATE_ADMIN_TOKEN=load-test-admin-token-0123456789abcdef
export KEYGATE_DURABILITY=${DURABILITY:-normal}
export KEYGATE_LOG=warn
# The headers are signed before the first phase, with one timestamp 30 s
# ahead. With the default 300 s skew they go stale five and a half minutes
# after signing, and a run of many rounds (and its signing) lasts longer. The skew only sets
# how long pairs are kept; nothing expires during a run either way.
export KEYGATE_SKEW_SECS=${KEYGATE_SKEW_SECS:-3600}
export KEYGATE_MASTER_KEY_FILE=$work/master-key

declare -A port
# serve NAME DB [ARGS]: a keygate on DB, its ports in ${port[NAME]}.
serve() {
  local p=$((20000 + RANDOM % 12000)) name=$1 db=$2
  shift 2
  KEYGATE_DB=$db "$bin" serve --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$((p + 1)) "$@" 2>"$work/$name.log" &
  pids+=($!)
  port[$name]=$p
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "keygate $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
# presign NAME DB COUNT FILE...: a key on DB, and COUNT pre-signed headers
# for it in each FILE, signed in the background (`signed` waits for them).
signers=()
signed() { wait "${signers[@]}"; signers=(); }
presign() {
  local key key_id secret file
  key=$(KEYGATE_DB=$2 "$bin" key create "$(KEYGATE_DB=$2 "$bin" app create "wrk-$1" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')" --json)
  key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$key")
  secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$key")
  for file in "${@:4}"; do
    python3 "$here/presign.py" "$key_id" "$secret" "$3" /v1/whoami "$file" &
    signers+=($!)
  done
}

# Every phase has the same two cores, one wrk process of two threads and
# two public workers in all: one instance has two workers; each of two
# instances has one, and one wrk thread of its own (replay.lua's TARGETS),
# with headers for its own key: $work/NAME.auth.N is thread N's.
KEYGATE_MASTER_KEY_FILE=$work/sqlite.master-key serve sqlite "$work/keygate.db"
serve pg-one "$pg_url"
serve pg-a "$pg_url" --workers 1
serve pg-b "$pg_url" --workers 1
KEYGATE_MASTER_KEY_FILE=$work/sqlite.master-key \
  presign sqlite "$work/keygate.db" "$per_thread" "$work/sqlite.auth.1" "$work/sqlite.auth.2"
signed
presign pg-one "$pg_url" "$per_thread" "$work/pg-one.auth.1" "$work/pg-one.auth.2"
signed
presign pg-a "$pg_url" "$per_thread_soak" "$work/pg-two.auth.1"
presign pg-b "$pg_url" "$per_thread_soak" "$work/pg-two.auth.2"
signed

if [ "$prefill" -gt 0 ]; then
  # Spread over the benchmark's keys as their own pairs would be, with
  # random nonces, expiring a day from now so that no purge removes them
  # during the run.
  psql -d keygate -c "INSERT INTO nonces (key_ref, nonce, expires_at)
    SELECT k.refs[1 + g % cardinality(k.refs)], md5(g::text), extract(epoch FROM now())::int8 + 86400
    FROM generate_series(1, $prefill) g, (SELECT array_agg(key_ref) AS refs FROM keys) k"
  psql -d keygate -c 'VACUUM ANALYZE nonces' -c CHECKPOINT
fi

declare -A requests p50s p99s next wal_bytes wal_fpi
# CPU ticks so far, as "keygate postgres machine-busy machine-idle stolen":
# keygate's and PostgreSQL's processes from /proc/PID/stat, the machine
# from /proc/stat (wrk, whose processes are gone by the end of a phase, and
# the kernel's loopback work are the rest of busy; idle counts I/O wait;
# stolen is time the hypervisor gave the cores to other machines).
cpu() {
  local k=0 p=0 f comm rest
  for f in /proc/[0-9]*/stat; do
    { read -r _ comm rest <"$f"; } 2>/dev/null || continue
    set -- $rest
    case $comm in
      "(keygate)") k=$((k + ${12} + ${13})) ;;
      "(postgres)") p=$((p + ${12} + ${13})) ;;
    esac
  done
  echo "$k $p $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6, $9}' /proc/stat)"
}
declare -A cpu_keygate cpu_postgres cpu_busy cpu_idle cpu_stolen
# The nonce table now: its rows and its size with its index.
nonce_table() {
  psql -d keygate -c "SELECT count(*) || ' pairs, ' || pg_size_pretty(pg_total_relation_size('nonces')) || ' with its index' FROM nonces"
}
# PostgreSQL's WAL so far, as "bytes full-page-images".
wal() { psql -d keygate -F' ' -c 'SELECT wal_bytes, wal_fpi FROM pg_stat_wal'; }
# run_wrk HEADERS CONNECTIONS SECONDS PORT...: one wrk process of two
# threads, thread N sending to the Nth port (wrapping around) with the
# headers in $work/HEADERS.auth.N; its output on stdout. The same load
# generator for every configuration: until round 14 two instances had two
# wrk processes of one thread each, and escaped the head start that
# replay.lua used to give the first thread of one process (BENCHMARKS.md).
run_wrk() {
  local headers=$1 connections=$2 seconds=$3 targets=() p
  shift 3
  for p in "$@"; do targets+=("127.0.0.1:$p"); done
  START=${next[$headers]:-0} NEXT_FILE=$work/$headers.next AUTH_FILE=$work/$headers.auth \
    TARGETS="${targets[*]}" TARGET=/v1/whoami \
    wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$here/replay.lua" "http://127.0.0.1:$1"
}
# phase NAME CONNECTIONS HEADERS PORT...: one wrk against the ports at
# once, its connections split between them.
declare -A batch_sum batch_count
phase() {
  local name=$1 connections=$2 headers=$3 n out p wal_before wal_after s0 c0 s1 c1
  shift 3
  wal_before=$(wal)
  read -r k0 p0 b0 i0 t0 <<<"$(cpu)"
  for p in "$@"; do read -r s0 c0 <<<"$(commits "$p")"; batch_sum[$name]=$((${batch_sum[$name]:-0} - s0)); batch_count[$name]=$((${batch_count[$name]:-0} - c0)); done
  out=$(run_wrk "$headers" "$connections" "$duration" "$@")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  next[$headers]=$(cat "$work/$headers.next")
  p50s[$name]="${p50s[$name]:-}$(echo "$out" | awk '/ 50%/ {print $2}') "
  p99s[$name]="${p99s[$name]:-}$(echo "$out" | awk '/ 99%/ {print $2}') "
  # A refused request (out of headers, or a stale timestamp) costs far
  # less than an accepted one and would inflate the phase's figure.
  if echo "$out" | grep -q Non-2xx; then
    echo "  $name: $(echo "$out" | grep Non-2xx | xargs): the figures would be wrong, stopping" >&2
    exit 1
  fi
  for p in "$@"; do read -r s1 c1 <<<"$(commits "$p")"; batch_sum[$name]=$((${batch_sum[$name]} + s1)); batch_count[$name]=$((${batch_count[$name]} + c1)); done
  requests[$name]=$((${requests[$name]:-0} + n))
  read -r k1 p1 b1 i1 t1 <<<"$(cpu)"
  cpu_keygate[$name]=$((${cpu_keygate[$name]:-0} + k1 - k0))
  cpu_postgres[$name]=$((${cpu_postgres[$name]:-0} + p1 - p0))
  cpu_busy[$name]=$((${cpu_busy[$name]:-0} + b1 - b0))
  cpu_idle[$name]=$((${cpu_idle[$name]:-0} + i1 - i0))
  cpu_stolen[$name]=$((${cpu_stolen[$name]:-0} + t1 - t0))
  wal_after=$(wal)
  wal_bytes[$name]=$((${wal_bytes[$name]:-0} + ${wal_after% *} - ${wal_before% *}))
  wal_fpi[$name]=$((${wal_fpi[$name]:-0} + ${wal_after#* } - ${wal_before#* }))
  printf '  %-42s %9.0f req/s\n' "$name" "$(echo "$n / $duration" | bc -l)"
}
commits() { # PORT: requests per commit so far, as "sum count"
  curl -fs -H "Authorization: Bearer $KEYGATE_ADMIN_TOKEN" "http://127.0.0.1:$(($1 + 1))/admin/metrics" |
    awk '/^keygate_nonce_requests_per_commit_sum/ {s=$2} /^keygate_nonce_requests_per_commit_count/ {c=$2} END {printf "%d %d\n", s, c}'
}

configs=("sqlite, one instance" "postgres, one instance" "postgres, two instances")
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
echo "PostgreSQL settings: $(psql -d keygate -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_compression')")"
echo "nonce table before the phases: $(nonce_table)"
echo "connections: $connection_counts; rounds=$rounds of ${duration}s phases (one wrk process of two threads, pre-signed GET /v1/whoami)"
for round in $(seq "$rounds"); do
  for c in $connection_counts; do
    phase "${configs[0]}, $c connections" "$c" sqlite "${port[sqlite]}"
    phase "${configs[1]}, $c connections" "$c" pg-one "${port[pg-one]}"
    phase "${configs[2]}, $c connections" "$c" pg-two "${port[pg-a]}" "${port[pg-b]}"
  done
done
total=$((rounds * duration))
# Clock ticks are 1/100 s: ticks * 10^4 / requests is microseconds a request.
tick_us=$((1000000 / $(getconf CLK_TCK)))
declare -A peak
for c in $connection_counts; do
  echo
  echo "$c connections:"
  base="${configs[0]}, $c connections"
  for config in "${configs[@]}"; do
    name="$config, $c connections"
    rate=$(echo "${requests[$name]} / $total" | bc -l)
    if [ "$(echo "$rate > ${peak[$config]:-0}" | bc -l)" = 1 ]; then peak[$config]=$rate; fi
    printf '  %-24s %9.0f req/s  %5.3f of sqlite  p50 by phase: %s p99 by phase: %s\n' "$config" "$rate" \
      "$(echo "${requests[$name]} / ${requests[$base]}" | bc -l)" "${p50s[$name]}" "${p99s[$name]}"
  done
  for config in "${configs[@]}"; do
    name="$config, $c connections"
    printf '  CPU a request, %s: keygate %.1f us, PostgreSQL %.1f us; requests per commit %.1f\n' "$config" \
      "$(echo "${cpu_keygate[$name]} * $tick_us / ${requests[$name]}" | bc -l)" \
      "$(echo "${cpu_postgres[$name]} * $tick_us / ${requests[$name]}" | bc -l)" \
      "$(echo "${batch_sum[$name]} / ${batch_count[$name]}" | bc -l)"
  done
  # Idle cores mean the configuration is bound by waiting (commits,
  # round trips), not by the CPU: more connections would carry more.
  for config in "${configs[@]}"; do
    name="$config, $c connections"
    all=$((${cpu_busy[$name]} + ${cpu_idle[$name]} + ${cpu_stolen[$name]}))
    printf '  the two cores, %s: busy %.0f%%, idle %.0f%%, stolen %.0f%%\n' "$config" \
      "$(echo "100 * ${cpu_busy[$name]} / $all" | bc -l)" "$(echo "100 * ${cpu_idle[$name]} / $all" | bc -l)" \
      "$(echo "100 * ${cpu_stolen[$name]} / $all" | bc -l)"
  done
  for config in "${configs[@]:1}"; do
    name="$config, $c connections"
    printf '  PostgreSQL WAL, %s: %.0f bytes and %.3f full-page images a request\n' "$config" \
      "$(echo "${wal_bytes[$name]} / ${requests[$name]}" | bc -l)" "$(echo "${wal_fpi[$name]} / ${requests[$name]}" | bc -l)"
  done
done
echo
echo "peak over the connection counts (what each configuration carries):"
for config in "${configs[@]}"; do
  printf '  %-24s %9.0f req/s  %5.3f of sqlite\n' "$config" "${peak[$config]}" "$(echo "${peak[$config]} / ${peak[${configs[0]}]}" | bc -l)"
done

if [ "$soak" -gt 0 ]; then
  echo
  echo "nonce table during ${soak}s on two instances (window = skew $KEYGATE_SKEW_SECS s + 1: nothing expires yet):"
  first=${connection_counts%% *}
  run_wrk pg-two "$first" "$soak" "${port[pg-a]}" "${port[pg-b]}" >/dev/null & soaker=$!
  for t in $(seq 0 10 "$soak"); do
    printf '  t=%3ss  %s\n' "$t" "$(nonce_table)"
    [ "$t" -lt "$soak" ] && sleep 10
  done
  wait $soaker
fi
