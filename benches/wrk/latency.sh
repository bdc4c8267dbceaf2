#!/usr/bin/env bash
# What a signature adds to a request, at each concurrency: /healthz against
# signed GET /v1/whoami, both through the same wrk script (replay.lua, each
# request a fresh pre-signed header read as it goes), phases alternating
# within each round so the machine's drift stays out of the comparison.
# One server, `normal` durability, every nonce recorded before its answer.
#
#   benches/wrk/latency.sh                              # 1 4 16 64 256 connections, 3 rounds of 4 s
#   CONNECTION_LIST="1 4" ROUNDS=5 benches/wrk/latency.sh
#   NONCE_MODES="durable memory-only" benches/wrk/latency.sh   # the decomposition build
#
# Prints one line per phase, then a table per mode: req/s, p50, p99, p99.9
# for both sides (medians over the rounds), the throughput ratio (sums over
# the rounds) and what a signature adds at p50 and p99. A second table per
# mode says where the time went: keygate's CPU per request (its threads,
# from /proc), how busy the whole machine was (wrk included, from
# /proc/stat), and how many signed requests shared one nonce commit (from
# /admin/metrics). When the machine is busy through both phases, the
# ratio is the ratio of CPU per request, wrk's share included.
#
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1.
set -euo pipefail
duration=${DURATION:-4}
rounds=${ROUNDS:-3}
connection_list=${CONNECTION_LIST:-1 4 16 64 256}
max_connections=0
for c in $connection_list; do [ "$c" -gt "$max_connections" ] && max_connections=$c; done
# Enough fresh headers for every signed phase of every concurrency (a wrk
# thread at up to ~60k req/s).
per_thread=$((rounds * duration * 60000 * $(echo "$connection_list" | wc -w) + 50000))
source "$(dirname "$0")/servers.sh"
for mode in $modes; do start_server "$mode" "$per_thread"; done

# CPU ticks of one process (all its threads), of its nonce writer thread
# alone (keygate-nonce-writer-N, which /proc cuts to 15 characters),
# and the machine's busy and total ticks.
process_ticks() { cpu_ticks "/proc/$1/stat"; }
writer_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = keygate-nonce-w ]; then cpu_ticks "$t/stat"; fi
  done | awk '{n += $1} END {print n + 0}'
}
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
# A counter from the admin metrics (Prometheus text).
counter() {
  { curl -fs -H "Authorization: Bearer $KEYGATE_ADMIN_TOKEN" "http://127.0.0.1:$((port[$1] + 1))/admin/metrics" || true; } |
    awk -v name="$2" '$1 == name {n = $2} END {printf "%.0f", n}'
}

per_request() { echo "$1 * 1000000 / $(getconf CLK_TCK) / $2" | bc -l; } # ticks requests -> µs

declare -A requests samples next_nonce ticks writer busy all commits
phase() { # mode side target connections
  local mode=$1 side=$2 c=$4 threads out n key t0 w0 m0 m1 c0
  threads=$((c < 2 ? c : 2))
  t0=$(process_ticks "${pid[$mode]}")
  w0=$(writer_ticks "${pid[$mode]}")
  read -r -a m0 < <(machine_ticks)
  c0=$(counter "$mode" keygate_nonce_commits_total)
  out=$(START=${next_nonce[$mode]:-0} NEXT_FILE=$work/$mode/next AUTH_FILE=$work/$mode/auth TARGET=$3 \
    wrk -t"$threads" -c"$c" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:${port[$mode]}")
  [ "$side" = signed ] && next_nonce[$mode]=$(cat "$work/$mode/next")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  key=$mode/$c/$side
  read -r -a m1 < <(machine_ticks)
  ticks[$key]=$((${ticks[$key]:-0} + $(process_ticks "${pid[$mode]}") - t0))
  writer[$key]=$((${writer[$key]:-0} + $(writer_ticks "${pid[$mode]}") - w0))
  busy[$key]=$((${busy[$key]:-0} + m1[0] - m0[0]))
  all[$key]=$((${all[$key]:-0} + m1[1] - m0[1]))
  commits[$key]=$((${commits[$key]:-0} + $(counter "$mode" keygate_nonce_commits_total) - c0))
  requests[$key]=$((${requests[$key]:-0} + n))
  samples[$key/rps]="${samples[$key/rps]:-} $(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')"
  samples[$key/p50]="${samples[$key/p50]:-} $(us "$(echo "$out" | awk '/ 50%/ {print $2}')")"
  samples[$key/p99]="${samples[$key/p99]:-} $(us "$(echo "$out" | awk '/ 99%/ {print $2}')")"
  samples[$key/p999]="${samples[$key/p999]:-} $(echo "$out" | awk '/^p99.9/ {print $2}')"
  printf '  %-12s c=%-4s %-16s %8.0f req/s  p50 %6s us  p99 %6s us  p99.9 %6s us%s\n' "$mode" "$c" "$side" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "${samples[$key/p50]##* }" "${samples[$key/p99]##* }" "${samples[$key/p999]##* }" \
    "$(echo "$out" | grep -q Non-2xx && echo "  ($(echo "$out" | grep Non-2xx | xargs))" || true)"
}

echo "durability=$KEYGATE_DURABILITY rounds=$rounds of ${duration}s phases, wrk -t min(2,c), pre-signed; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
for round in $(seq "$rounds"); do
  for c in $connection_list; do
    for mode in $modes; do
      phase "$mode" unauthenticated /healthz "$c"
      phase "$mode" signed /v1/whoami "$c"
    done
  done
done
for mode in $modes; do
  echo
  echo "$mode (medians of $rounds rounds; ratio over the sums)"
  echo "| connections | /healthz req/s | p50 | p99 | p99.9 | signed req/s | p50 | p99 | p99.9 | ratio | added p50 | added p99 |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in $connection_list; do
    u=$mode/$c/unauthenticated s=$mode/$c/signed
    declare -A m=()
    for side in u s; do
      for stat in rps p50 p99 p999; do
        key=${!side}
        m[$side/$stat]=$(echo "${samples[$key/$stat]}" | median)
      done
    done
    printf '| %s | %s | %s us | %s us | %s us | %s | %s us | %s us | %s us | %.2f | %+d us | %+d us |\n' "$c" \
      "${m[u/rps]}" "${m[u/p50]}" "${m[u/p99]}" "${m[u/p999]}" "${m[s/rps]}" "${m[s/p50]}" "${m[s/p99]}" "${m[s/p999]}" \
      "$(echo "${requests[$s]} / ${requests[$u]}" | bc -l)" $((m[s/p50] - m[u/p50])) $((m[s/p99] - m[u/p99]))
  done
  echo
  echo "$mode: where the time went (sums over the rounds)"
  echo "| connections | /healthz keygate CPU | machine busy | signed keygate CPU | of it the nonce writer | machine busy | signed requests per commit |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for c in $connection_list; do
    u=$mode/$c/unauthenticated s=$mode/$c/signed
    printf '| %s | %.1f us | %.0f%% | %.1f us | %.1f us | %.0f%% | %s |\n' "$c" \
      "$(per_request "${ticks[$u]}" "${requests[$u]}")" "$(echo "100 * ${busy[$u]} / ${all[$u]}" | bc -l)" \
      "$(per_request "${ticks[$s]}" "${requests[$s]}")" "$(per_request "${writer[$s]}" "${requests[$s]}")" "$(echo "100 * ${busy[$s]} / ${all[$s]}" | bc -l)" \
      "$([ "${commits[$s]}" -gt 0 ] && printf '%.2f' "$(echo "${requests[$s]} / ${commits[$s]}" | bc -l)" || echo 'no commits')"
  done
done
