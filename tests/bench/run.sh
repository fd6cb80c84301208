#!/usr/bin/env bash
# shellcheck disable=SC2154 # local_*, h_*, e_*, c_*, s_*: set by eval of the benchmarks' key=value lines
# icefarm benchmarks: prints tables of our numbers beside the old system's.
#   tests/bench/run.sh [BUILD_DIR]        (default: ./build; run ./icefarm build first)
# Sizes: ICEFARM_BENCH_WORKERS (50) x ICEFARM_BENCH_BOARDS (20) simulated boards for
# the control plane; 1, 8 and 64 boards on one worker for evaluations.
set -euo pipefail
export ICEFARM_LOG_LEVEL=warn
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FARM_BIN=$(cd "${1:-$ROOT/build}" && pwd)
WORKERS=${ICEFARM_BENCH_WORKERS:-50}
PER=${ICEFARM_BENCH_BOARDS:-20}
SECS=${ICEFARM_BENCH_SECONDS:-10}
WINDOW_MS=${ICEFARM_BENCH_WINDOW_MS:-50}
source "$ROOT/broker/embedded/farm.sh"
RUN=$(mktemp -d)
EXTRA=()
cleanup() { for p in "${EXTRA[@]}"; do kill -9 "$p" 2>/dev/null || true; done; farm_stop; rm -rf "$RUN"; }
trap cleanup EXIT

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
cli() { "$FARM_BIN/cli/icefarm-cli" --broker "$FARM_BROKER" --timeout 5 "$@"; }
avail() { cli --json available 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["amount"])' 2>/dev/null || echo 0; }

echo "== control plane: $WORKERS workers x $PER simulated boards =="
FARM_WORKER=w0 farm_start "$RUN/cp" "$PER" --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
for ((i = 1; i < WORKERS; i++)); do
    "$FARM_BIN/wrk/icefarm-wrk" --broker "$FARM_BROKER" --name "w$i" --sim "$PER" --sim-flash-ms 20 \
        --sim-window-ms "$WINDOW_MS" >"$RUN/cp/wrk$i.log" 2>&1 &
    EXTRA+=($!)
done
total=$((WORKERS * PER))
farm_wait_ready "$total" 180
CTL=${FARM_PIDS[1]}
rss_idle=$(rss_kb "$CTL")
results=()
for clients in 1 8 32; do
    c0=$(cpu_ticks "$CTL")
    line=$("$FARM_BIN/tests/bench/bench_reserve" "$FARM_BROKER" "$clients" "$SECS")
    c1=$(cpu_ticks "$CTL")
    cpu=$(python3 -c "print(f'{($c1-$c0)/$tck/$SECS*100:.0f}')")
    results+=("$line ctl_cpu_pct=$cpu")
done
rss_busy=$(rss_kb "$CTL")
farm_start_http
http_results=()
for clients in 1 8; do
    http_results+=("$("$FARM_BIN/tests/bench/bench_http" "$FARM_HTTP" "$clients" "$SECS")")
done

# Worker death: time from the signal until control reports the worker offline.
worker_online() {
    cli --json status 2>/dev/null | python3 -c "import json,sys; print([w['online'] for w in json.load(sys.stdin)['workers'] if w['id']=='$1'][0])" 2>/dev/null || echo unknown
}
time_offline() { # PID NAME SIGNAL
    local t0 t1 deadline=$((SECONDS + 60))
    t0=$(date +%s%N)
    kill "-$3" "$1"
    while [[ $(worker_online "$2") != False ]] && ((SECONDS < deadline)); do sleep 0.05; done
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
# A hung worker (SIGSTOP): control stops granting its boards after two missed
# heartbeats (PROTOCOL.md 14.2), long before the keep-alive reveals it.
worker_state() {
    cli --json status 2>/dev/null | python3 -c "import json,sys; print([w['state'] for w in json.load(sys.stdin)['workers'] if w['id']=='$1'][0])" 2>/dev/null || echo unknown
}
time_hung() { # PID NAME
    local t0 t1 deadline=$((SECONDS + 60))
    t0=$(date +%s%N)
    kill -STOP "$1"
    while [[ $(worker_state "$2") != hung ]] && ((SECONDS < deadline)); do sleep 0.05; done
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
sleep 2
death_ms=$(time_offline "${EXTRA[0]}" w1 KILL)
hang_ms=$(time_offline "${EXTRA[1]}" w2 STOP)
kill -9 "${EXTRA[1]}"
hung_ms=$(time_hung "${EXTRA[2]}" w3)
kill -9 "${EXTRA[2]}"

printf '\n%-44s %-22s %s\n' "control plane ($total boards)" "old iCEFARM" "icefarm"
for r in "${results[@]}"; do
    eval "$(tr ' ' '\n' <<<"$r" | grep '=' | sed 's/^/local_/')"
    printf '%-44s %-22s %s\n' "reserve+end pairs/s, $local_clients client(s)" "<= 34" "$local_pairs_per_s (ctl CPU $local_ctl_cpu_pct%)"
    printf '%-44s %-22s %s\n' "  reserve latency p50 / p99" "16.5 / 25.7 ms" "$local_reserve_p50_ms / $local_reserve_p99_ms ms"
    printf '%-44s %-22s %s\n' "  end latency p50 / p99" "-" "$local_end_p50_ms / $local_end_p99_ms ms"
done
for r in "${http_results[@]}"; do
    eval "$(tr ' ' '\n' <<<"$r" | grep '=' | sed 's/^/h_/')"
    printf '%-44s %-22s %s\n' "HTTP /reserve+/end pairs/s, $h_clients client(s)" "<= 34" "$h_pairs_per_s"
    printf '%-44s %-22s %s\n' "  HTTP reserve latency p50 / p99" "16.5 / 25.7 ms" "$h_reserve_p50_ms / $h_reserve_p99_ms ms"
done
printf '%-44s %-22s %s\n' "control resident memory idle / after load" "66 MB (4 boards)" "$((rss_idle / 1024)) MB / $((rss_busy / 1024)) MB"
printf '%-44s %-22s %s\n' "dead worker noticed (kill -9)" "166 s" "$death_ms ms"
printf '%-44s %-22s %s\n' "hung worker not granted (SIGSTOP, heartbeat 1 s)" "166 s" "$hung_ms ms (bound: 3000 ms)"
printf '%-44s %-22s %s\n' "hung worker's Will (SIGSTOP, keep-alive 5 s)" "166 s" "$hang_ms ms (bound: 7500 ms)"
for p in "${EXTRA[@]}"; do kill -9 "$p" 2>/dev/null || true; done
EXTRA=()
farm_stop

echo
echo "== evaluations: one worker, simulated count window ${WINDOW_MS} ms =="
printf '%-10s %-12s %-22s %-24s %-22s %s\n' boards "evals/s" "ms/eval/board" "overhead ms/eval" "worker CPU ms/eval" "worker KB/board"
for boards in 1 8 64; do
    FARM_WORKER=evalw farm_start "$RUN/ev$boards" "$boards" --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
    farm_wait_ready "$boards" 120
    WRK=${FARM_PIDS[2]}
    c0=$(cpu_ticks "$WRK")
    per=$((boards >= 64 ? 20 : 40))
    line=$("$FARM_BIN/tests/bench/bench_eval" "$FARM_BROKER" "$boards" "$per" 2 "$WINDOW_MS")
    c1=$(cpu_ticks "$WRK")
    rss1=$(rss_kb "$WRK")
    eval "$(tr ' ' '\n' <<<"$line" | grep '=' | sed 's/^/e_/')"
    cpu_ms=$(python3 -c "print(f'{($c1-$c0)*1000/$tck/$e_evals:.2f}')")
    printf '%-10s %-12s %-22s %-24s %-22s %s\n' "$boards" "$e_evals_per_s" "$e_per_eval_per_board_ms" \
        "$e_overhead_ms" "$cpu_ms" "$((rss1 / boards))"
    farm_stop
done
echo "(old iCEFARM: ~240 ms overhead and ~5 ms worker CPU per evaluation; its window is 1000 ms)"

echo
echo "== client side: libicefarm's batch engine vs raw MQTT messages, 64 boards =="
printf '%-34s %-12s %s\n' client "evals/s" "overhead ms/eval/board"
for engine in bench_eval bench_eval_raw; do
    FARM_WORKER=evalw farm_start "$RUN/cl-$engine" 64 --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
    farm_wait_ready 64 120
    line=$("$FARM_BIN/tests/bench/$engine" "$FARM_BROKER" 64 20 2 "$WINDOW_MS")
    eval "$(tr ' ' '\n' <<<"$line" | grep '=' | sed 's/^/c_/')"
    name=$([[ $engine == bench_eval ]] && echo "libicefarm batch engine" || echo "raw MQTT (proto glue only)")
    printf '%-34s %-12s %s\n' "$name" "$c_evals_per_s" "$c_overhead_ms"
    farm_stop
done

echo
echo "== USB/IP: a 64-byte bulk OUT then IN (URB round trip) and CDC throughput, one simulated board =="
# its broker carries the tunnel's figure; its worker exports the board `serial` uses below
uport=$(farm_free_port)
farm_start "$RUN/usbip" 1 --kinds pulsecount,usbip --usbip-listen "127.0.0.1:$uport" --usbip-host 127.0.0.1
URBS=${ICEFARM_BENCH_URBS:-2000}
raw=$("$FARM_BIN/tests/bench/bench_usbip" "$URBS" 8 "$FARM_BROKER")
echo "$raw"
rawv() { sed -n "s/^$1=\([^ ]*\).*/\1/p" <<<"$raw"; }

# icefarm-cli serial end to end (stdin -> libicefarm's USB/IP client -> the worker's
# server or the broker tunnel -> the board's CDC1 loopback -> stdout) on the board
# of a `reserve --kind usbip`. Goals: a full-speed USB frame is 1 ms and full-speed
# bulk carries at most ~1.2 MB/s, so the network path should cost less than the
# board's own USB: a round trip within 1 ms (2 ms through the broker), at least
# 1.2 MB/s either way. Printed beside the figures, never asserted.
farm_wait_ready 1 60
userial=$(cli --name bench --json reserve --kind usbip --amount 1 --duration 600 --args '{"image": "pulsecount"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["serials"][0]["serial"])')
SER_KB=${ICEFARM_BENCH_SERIAL_KB:-8192}
echo
echo "== USB/IP, the user's side: icefarm-cli serial (stdin/stdout) on the board's CDC1 loopback, $SER_KB KiB =="
printf '%-24s %-26s %-12s %-34s %s\n' path "64 B round trip p50/p99" "bytes/s" "raw figure (bench_usbip above)" goal
for mode in direct tunnel; do
    args=()
    [[ $mode == tunnel ]] && args=(--tunnel)
    line=$("$FARM_BIN/tests/bench/bench_usbip_serial" "$URBS" "$SER_KB" "$FARM_BIN/cli/icefarm-cli" \
        --broker "$FARM_BROKER" --timeout 20 --name bench serial "$userial" --interface 2 "${args[@]}" \
        2>>"$RUN/usbip/serial-$mode.err") || true
    eval "$(tr ' ' '\n' <<<"$line" | grep '=' | sed 's/^/s_/')"
    if [[ $line == *serial_failed=* ]]; then
        printf '%-24s %s\n' "serial, $mode" "failed: $s_serial_failed ($(tail -n 2 "$RUN/usbip/serial-$mode.err" | tr '\n' ' '))"
        continue
    fi
    mbs=$(python3 -c "print(f'{$s_serial_bytes_s / 1e6:.1f} MB/s')")
    if [[ $mode == direct ]]; then
        printf '%-24s %-26s %-12s %-34s %s\n' "serial, direct TCP" "$s_serial_rtt_p50_us / $s_serial_rtt_p99_us us" "$mbs" \
            "server $(rawv usbip_server_rtt_us) us, $(rawv usbip_server_cdc_mbytes_s) MB/s" "<= 1000 us, >= 1.2 MB/s"
    else
        printf '%-24s %-26s %-12s %-34s %s\n' "serial, broker tunnel" "$s_serial_rtt_p50_us / $s_serial_rtt_p99_us us" "$mbs" \
            "tunnel $(rawv usbip_tunnel_rtt_us) us (OUT, then IN)" "<= 2000 us, >= 1.2 MB/s"
    fi
done
echo "(raw: the server in-process with an unclocked sim, a blocking client sending OUT then IN; serial: icefarm-cli"
echo " through pipes, the worker's own process and its sim's USB clock, bulk-IN URBs kept queued by the client)"
farm_stop
