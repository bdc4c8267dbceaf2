#!/usr/bin/env bash
# Gateway mode against nginx `proxy_pass`, in front of one upstream: both
# proxies forward GET /v1/orders to the same nginx upstream (one worker,
# `return 200` with a 60-byte JSON body), driven by the same wrk script
# (replay.lua, each request a fresh pre-signed header read as it goes;
# nginx ignores the header), phases alternating within each round.
# keygate verifies every request and records its nonce before forwarding.
#
#   benches/wrk/gateway.sh                            # 64 connections, 3 rounds of 5 s
#   CONNECTION_LIST="16 64" ROUNDS=5 benches/wrk/gateway.sh
#   NGINX_KEEPALIVE=1 benches/wrk/gateway.sh          # nginx keeping upstream connections open
#   NONCE_MODES=memory-only benches/wrk/gateway.sh    # the decomposition build: what the commit costs
#
# The proxying nginx runs as many workers as there are cores, like
# keygate. `proxy_pass` alone (the default) opens a connection to the
# upstream per request, as nginx does unless told otherwise; with
# NGINX_KEEPALIVE=1 it reuses them (HTTP/1.1 and an upstream keepalive
# pool), as keygate does.
#
# Needs wrk and nginx (apt-get install wrk nginx). Everything stays on
# 127.0.0.1.
set -euo pipefail
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connection_list=${CONNECTION_LIST:-64}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
per_thread=$((rounds * duration * 40000 * $(echo "$connection_list" | wc -w) + 50000))
upstream_port=$((20000 + RANDOM % 12000))
proxy_port=$((upstream_port + 2))
export KEYGATE_UPSTREAM=http://127.0.0.1:$upstream_port
export SIGNED_TARGET=/v1/orders
source "$(dirname "$0")/servers.sh"
mode=$modes
[ "$(echo "$mode" | wc -w)" = 1 ] || { echo "NONCE_MODES: one mode at a time here" >&2; exit 1; }

# start_nginx NAME WORKERS SERVER_BLOCK: nginx in the foreground in
# $work/NAME, its pid in ${pid[NAME]}.
start_nginx() {
  local dir=$work/$1 user=""
  mkdir -p "$dir"
  # As root nginx would switch to `nobody`, who cannot read $work.
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$dir/nginx.conf" <<CONF
$user
daemon off;
worker_processes $2;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  $3
}
CONF
  "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" &
  pid[$1]=$!
}
start_nginx upstream 1 "server { listen 127.0.0.1:$upstream_port; location / { default_type application/json; return 200 '{\"orders\":[{\"id\":\"ord_1\",\"total\":\"12.50\",\"status\":\"paid\"}]}'; } }"
if [ "${NGINX_KEEPALIVE:-0}" = 1 ]; then
  start_nginx proxy "$(nproc)" "upstream api { server 127.0.0.1:$upstream_port; keepalive 64; }
  server { listen 127.0.0.1:$proxy_port; location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
else
  start_nginx proxy "$(nproc)" "server { listen 127.0.0.1:$proxy_port; location / { proxy_pass http://127.0.0.1:$upstream_port; } }"
fi
start_server "$mode" "$per_thread"
for p in $upstream_port $proxy_port; do
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$p/v1/orders" >/dev/null 2>&1 && break; sleep 0.1; done
done

# CPU ticks of a process and its children (nginx's workers).
ticks_of() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(cpu_ticks "/proc/$p/stat")))
  done
  echo "$total"
}
declare -A requests samples ticks
declare -A proxy_pid
next_nonce=0
phase() { # side port connections
  local side=$1 c=$3 out key before after
  before=$(ticks_of "${proxy_pid[$side]}")
  out=$(START=$next_nonce NEXT_FILE=$work/next AUTH_FILE=$work/$mode/auth TARGET=/v1/orders \
    wrk -t2 -c"$c" -d"${duration}s" --latency -s "$here/replay.lua" "http://127.0.0.1:$2")
  after=$(ticks_of "${proxy_pid[$side]}")
  [ "$side" = gateway ] && next_nonce=$(cat "$work/next")
  if echo "$out" | grep -q Non-2xx; then
    echo "$side: $(echo "$out" | grep Non-2xx | xargs)" >&2
    exit 1
  fi
  key=$c/$side
  requests[$key]=$((${requests[$key]:-0} + $(echo "$out" | awk '/requests in/ {print $1}')))
  ticks[$key]=$((${ticks[$key]:-0} + after - before))
  samples[$key/rps]="${samples[$key/rps]:-} $(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')"
  samples[$key/p50]="${samples[$key/p50]:-} $(us "$(echo "$out" | awk '/ 50%/ {print $2}')")"
  samples[$key/p99]="${samples[$key/p99]:-} $(us "$(echo "$out" | awk '/ 99%/ {print $2}')")"
  printf '  c=%-4s %-8s %8.0f req/s  p50 %6s us  p99 %6s us  proxy CPU %5.1f us/request\n' "$c" "$side" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "${samples[$key/p50]##* }" "${samples[$key/p99]##* }" \
    "$(echo "($after - $before) * 1000000 / $(getconf CLK_TCK) / $(echo "$out" | awk '/requests in/ {print $1}')" | bc -l)"
}

proxy_pid[nginx]=${pid[proxy]}
proxy_pid[gateway]=${pid[$mode]}
echo "nginx $("$nginx_bin" -v 2>&1 | cut -d/ -f2) proxy_pass$([ "${NGINX_KEEPALIVE:-0}" = 1 ] && echo ' with keepalive') against keygate gateway mode ($mode); durability=$KEYGATE_DURABILITY; rounds=$rounds of ${duration}s, wrk -t2; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
for round in $(seq "$rounds"); do
  for c in $connection_list; do
    phase nginx "$proxy_port" "$c"
    phase gateway "${port[$mode]}" "$c"
  done
done
echo
echo "(medians of $rounds rounds; ratio over the sums)"
echo "| connections | nginx req/s | p50 | p99 | CPU/request | gateway req/s | p50 | p99 | CPU/request | ratio | added p99 |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for c in $connection_list; do
  declare -A m=()
  for side in nginx gateway; do
    for stat in rps p50 p99; do m[$side/$stat]=$(echo "${samples[$c/$side/$stat]}" | median); done
  done
  cpu() { echo "${ticks[$c/$1]} * 1000000 / $(getconf CLK_TCK) / ${requests[$c/$1]}" | bc -l; }
  printf '| %s | %s | %s us | %s us | %.1f us | %s | %s us | %s us | %.1f us | %.2f | %+d us |\n' "$c" \
    "${m[nginx/rps]}" "${m[nginx/p50]}" "${m[nginx/p99]}" "$(cpu nginx)" "${m[gateway/rps]}" "${m[gateway/p50]}" "${m[gateway/p99]}" "$(cpu gateway)" \
    "$(echo "${requests[$c/gateway]} / ${requests[$c/nginx]}" | bc -l)" $((m[gateway/p99] - m[nginx/p99]))
done
