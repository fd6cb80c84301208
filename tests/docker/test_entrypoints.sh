#!/usr/bin/env bash
# The docker stack without docker: validate docker/compose.yml with
# docker-compose, then run docker/entrypoint.sh's roles (init, broker, ctl, http,
# worker) and healthcheck.sh directly on this machine, from a `cmake --install`
# of the build, exactly as the containers would, and use the farm as a client.
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
chmod 755 "$T" # the broker drops root before it reads its files
PIDS=()
pass=0 fail=0
check() { if "$@"; then pass=$((pass + 1)); echo "ok - $CHECK"; else fail=$((fail + 1)); echo "not ok - $CHECK"; fi; }
cleanup() {
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; sleep 0.2; done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    if ((fail)); then tail -n 20 "$T"/*.log >&2 || true; fi
    rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
source "$ROOT/broker/embedded/farm.sh"
farm_sanitized_broker "$T" # an ASan build's plugin needs the sanitizer runtimes in the broker

if command -v docker-compose >/dev/null; then
    CHECK="docker-compose config accepts docker/compose.yml"
    check docker-compose -f "$ROOT/docker/compose.yml" config -q
else
    echo "# docker-compose is not installed: compose.yml not validated"
fi

cmake --install "$FARM_BIN" --prefix "$T/prefix" >/dev/null
export ICEFARM_PREFIX=$T/prefix ICEFARM_ETC=$T/etc ICEFARM_BROKER_HOST=localhost ICEFARM_LISTEN_HOST=127.0.0.1
ICEFARM_MQTTS_PORT=$(free_port) ICEFARM_WSS_PORT=$(free_port) ICEFARM_HTTP_PORT=$(free_port)
export ICEFARM_MQTTS_PORT ICEFARM_WSS_PORT ICEFARM_HTTP_PORT
export ICEFARM_HTTP_LISTEN=127.0.0.1:$ICEFARM_HTTP_PORT ICEFARM_DATA=$T/leases ICEFARM_WORKER_NAME=lab-worker
export ICEFARM_USERS="alice:client" ICEFARM_OPERATOR_DIR=$T/operator
EP=$ROOT/docker/entrypoint.sh HC=$ROOT/docker/healthcheck.sh

CHECK="init makes the CA, the certificates and the service users"
check bash -c "'$EP' init >'$T/init.log' 2>&1 && test -s '$T/etc/certs/ca.crt' && test -s '$T/etc/secrets/alice'"
CHECK="init gives the operator alice's password in a private file, and the CA"
check bash -c "test \"\$(stat -c %a '$T/operator/passwords')\" = 600 && grep -qx \"alice \$(cat '$T/etc/secrets/alice')\" '$T/operator/passwords' && cmp -s '$T/operator/ca.crt' '$T/etc/certs/ca.crt'"
CHECK="init gives the operator the metrics scrape's password (docker/prometheus.yml's user metrics), private"
check bash -c "test \"\$(stat -c %a '$T/operator/prometheus-http.password')\" = 600 && cmp -s '$T/operator/prometheus-http.password' '$T/etc/secrets/metrics'"
CHECK="init's log says where the passwords are"
check grep -q "operator: the passwords of alice:client are in passwords" "$T/init.log"
CHECK="init again keeps every password"
before=$(cat "$T/etc/secrets/ctl")
"$EP" init >/dev/null 2>&1
check test "$before" = "$(cat "$T/etc/secrets/ctl")"

healthy() { # ROLE: polls healthcheck.sh like docker does
    local i
    for i in $(seq 1 100); do "$HC" "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
"$EP" broker >"$T/broker.log" 2>&1 & PIDS+=($!)
CHECK="broker becomes healthy"; check healthy broker
"$EP" ctl >"$T/ctl.log" 2>&1 & PIDS+=($!)
CHECK="ctl becomes healthy"; check healthy ctl
"$EP" http >"$T/http.log" 2>&1 & PIDS+=($!)
CHECK="http becomes healthy"; check healthy http
# As compose runs it for a lab without boards: ICEFARM_SIM, and firmware paths that do not exist.
ICEFARM_SIM=4 ICEFARM_DEFAULT=$T/absent/default_firmware.uf2 ICEFARM_PULSE_COUNT=$T/absent/bitstream_over_usb.uf2 \
    "$EP" worker --sim-window-ms 50 --sim-flash-ms 20 >"$T/worker.log" 2>&1 & PIDS+=($!)
CHECK="worker becomes healthy"; check healthy worker

cli=("$T/prefix/bin/icefarm-cli" --broker "mqtts://localhost:$ICEFARM_MQTTS_PORT" --cafile "$T/etc/certs/ca.crt"
     --user alice --password-file "$T/etc/secrets/alice")
n=0
for _ in $(seq 1 100); do
    n=$("${cli[@]}" --json available 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["amount"])' 2>/dev/null || echo 0)
    ((n >= 4)) && break
    sleep 0.2
done
CHECK="the worker's 4 boards are available to alice over TLS ($n)"; check test "$n" -ge 4
out=$("${cli[@]}" --json evaluate --boards 2 "$ROOT"/tests/bitstreams/clk_1khz.bin "$ROOT"/tests/bitstreams/clk_2khz.bin || true)
CHECK="alice evaluates two bitstreams and gets the right counts"
check python3 -c "
import json, sys, zlib
r = json.loads(sys.argv[1])['results']
sys.exit(0 if len(r) == 2 and all(x.get('pulses') == zlib.crc32(open(x['file'],'rb').read()) % 100000 for x in r) else 1)" "$out"
CHECK="the HTTP API answers through the gateway user"
check bash -c "curl -sf -u 'alice:$(cat "$T/etc/secrets/alice")' 'http://127.0.0.1:$ICEFARM_HTTP_PORT/available' | grep -q amount"
CHECK="a wrong password is refused"
check bash -c "! '$T/prefix/bin/icefarm-cli' --broker mqtts://localhost:$ICEFARM_MQTTS_PORT --cafile '$T/etc/certs/ca.crt' --user alice --password nope --timeout 3 status >/dev/null 2>&1"
echo "$pass passed, $fail failed"
((fail == 0))
