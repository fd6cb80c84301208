#!/usr/bin/env bash
# icefarm_mqtt_reconnects_total across a broker restart: the embedded farm (1
# simulated board) with /metrics on icefarm-ctl, icefarm-wrk and icefarm-http;
# the broker is killed with SIGKILL and started again on the same port. Each
# daemon's icefarm_mqtt_connected goes 0 while it is down, and once they are back
# each one's icefarm_mqtt_reconnects_total has moved by exactly 1 and every
# /metrics still passes promtool. Heavy (a broker restart): RelWithDebInfo pass
# only; budget 120 s, about 3 s here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
# shellcheck source=prom.sh
source "$(dirname "${BASH_SOURCE[0]}")/prom.sh" # scrape, val, total, moved

if ! command -v promtool >/dev/null; then
    echo "skip: promtool not installed (apt install prometheus)"
    exit 77
fi

CTL_M=127.0.0.1:$(farm_free_port)
WRK_M=127.0.0.1:$(farm_free_port)
export FARM_CTL_ARGS="--metrics-listen $CTL_M"
e2e_farm_start 1 --sim-window-ms 50 --sim-flash-ms 50 --metrics-listen "$WRK_M"
farm_start_http
HTTP_M=${FARM_HTTP#http://}
PORT=${FARM_BROKER##*:}
DAEMONS=("ctl:$CTL_M" "wrk:$WRK_M" "http:$HTTP_M")

declare -A R0=()
for d in "${DAEMONS[@]}"; do
    n=${d%%:*}
    check "icefarm-$n serves /metrics" scrape "$n" "${d#*:}"
    check "icefarm-$n is connected" test "$(val "$n" icefarm_mqtt_connected)" = 1
    R0[$n]=$(val "$n" icefarm_mqtt_reconnects_total)
done

broker=$(e2e_pid_of broker)
e2e_kill9 "$broker"
ok "kill -9 the broker (pid $broker)"
disconnected() { scrape "$1" "$2" && test "$(val "$1" icefarm_mqtt_connected)" = 0; }
for d in "${DAEMONS[@]}"; do
    check "icefarm-${d%%:*} reports icefarm_mqtt_connected 0 while the broker is down" \
        wait_until 15 disconnected "${d%%:*}" "${d#*:}"
done
echo "---- e2e: broker restarted ----" >>"$RUN/mosquitto.log"
mosquitto -c "$RUN/mosquitto.conf" >>"$RUN/mosquitto.log" 2>&1 &
FARM_PIDS+=($!)
E2E_ROLE[$!]=broker
check "the broker is back on port $PORT" farm_wait_port "$PORT" 200
reconnected() { scrape "$1" "$2" && test "$(val "$1" icefarm_mqtt_connected)" = 1; }
for d in "${DAEMONS[@]}"; do
    n=${d%%:*}
    check "icefarm-$n reconnects" wait_until 30 reconnected "$n" "${d#*:}"
    check "icefarm-$n: icefarm_mqtt_reconnects_total moved by 1" moved "$n" icefarm_mqtt_reconnects_total "${R0[$n]}" 1
    check "icefarm-$n's /metrics passes promtool check metrics" bash -c "promtool check metrics <'$RUN/$n.prom'"
done
