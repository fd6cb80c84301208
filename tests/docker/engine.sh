#!/usr/bin/env bash
# The lab stack on a real docker engine, brought up the way docker/compose.yml tells a
# lab to (`ICEFARM_SIM=4 docker-compose -f docker/compose.yml up -d --build`, Debian 12's
# docker-compose 1.29), plus an override that builds from a cached Debian base image with
# host networking, and environment that publishes every port on free loopback ports.
# Then a client session over mqtts with the lab CA and the password init gave the
# operator, the HTTP API through its published port, and a teardown that leaves nothing.
#
# HEAVY (RelWithDebInfo pass only). Budget: 15 min on a fresh machine (debootstrap of
# the base image, about 6 min, then cached outside the clone in /var/cache/icefarm or
# ~/.cache/icefarm), about 4 min afterwards (mostly compiling icefarm in the image).
# The engine is our own dockerd (--iptables=false --ip-forward=false: the host's
# networking is left alone), its state under the cache directory, stopped at the end
# with the bridges it made. Needs root, docker.io, docker-compose and debootstrap.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${FARM_BIN:?set FARM_BIN to the build directory}"
# shellcheck source=../lib/checks.sh
source "$ROOT/tests/lib/checks.sh"
# shellcheck source=engine_lib.sh
source "$ROOT/tests/docker/engine_lib.sh"

[[ $(id -u) == 0 ]] || { echo "skip: needs root (a docker engine of its own)"; exit 77; }
for p in dockerd /usr/bin/docker docker-compose debootstrap ip flock; do
    command -v "$p" >/dev/null || { echo "skip: $p is not installed (./icefarm test installs it)"; exit 77; }
done
DOCKER=/usr/bin/docker # Debian's docker.io client, whatever else is on PATH
CACHE=$(engine_cache_dir)
T=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-engine.XXXXXX")
PROJECT=icefarm-enginetest
compose() { (cd "$ROOT" && docker-compose -p "$PROJECT" -f docker/compose.yml -f "$T/override.yml" "$@"); }
phase_start=$SECONDS
phase() {
    echo "# $1 ($((SECONDS - phase_start)) s)"
    phase_start=$SECONDS
}

cleanup() {
    if [[ -n $ENGINE_PID ]]; then
        if ((FAIL)); then
            compose ps 2>/dev/null || true
            compose logs --no-color --tail 30 2>/dev/null | sed 's/^/# /' || true
        fi
        compose down -v --remove-orphans >/dev/null 2>&1 || true
        "$DOCKER" image prune -f >/dev/null 2>&1 || true # old builds; the layer cache stays
    fi
    engine_stop
    ((FAIL == 0)) || tail -n 20 "$CACHE/docker/dockerd.log" 2>/dev/null | sed 's/^/# dockerd: /'
    rm -rf "$T"
}
trap cleanup EXIT

# One run at a time per cache: the engine's data-root lives there.
exec 9>"$CACHE/engine.lock"
flock -w 1800 9 || { not_ok "the engine cache $CACHE is locked by another run for 30 min"; exit 1; }

if engine_start "$CACHE"; then ok "our dockerd answers on $DOCKER_HOST"; else not_ok "dockerd starts"; exit 1; fi
phase "engine up"

# Everything the Dockerfile installs, preinstalled in the cached base: the image build
# then needs neither apt nor the network.
BASE_PACKAGES=(build-essential cmake pkg-config libmosquitto-dev mosquitto-dev libmsgpack-dev libusb-1.0-0-dev
    liblmdb-dev libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev libssl-dev mosquitto mosquitto-clients
    openssl libmosquitto1 libmsgpackc2 libusb-1.0-0 liblmdb0 libcurl4 libmicrohttpd12 libjansson4 ca-certificates)
BASE=icefarm-base:bookworm
if engine_base_image "$CACHE" "$BASE" "${BASE_PACKAGES[@]}"; then
    ok "a Debian base image from debootstrap ($BASE, cached in $CACHE)"
else
    not_ok "a Debian base image from debootstrap"
    exit 1
fi
phase "base image"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTTS=$(free_port) WSS=$(free_port) HTTP=$(free_port) USBIP=$(free_port)
export ICEFARM_MQTTS_PUBLISH=127.0.0.1:$MQTTS ICEFARM_WSS_PUBLISH=127.0.0.1:$WSS ICEFARM_HTTP_PUBLISH=127.0.0.1:$HTTP
export ICEFARM_USBIP_PUBLISH=127.0.0.1:$USBIP
export ICEFARM_OPERATOR_DIR=$T/operator ICEFARM_FIRMWARE_DIR=$T/firmware
unset ICEFARM_USERS # compose.yml's default accounts
export ICEFARM_SIM=4 # the documented command for a lab with no boards
mkdir -p "$T/operator" "$T/firmware" "$T/usb" "$T/udev"
{
    echo "# tests/docker/engine.sh: build from the cached base with host networking (this"
    echo "# dockerd does no NAT); no host USB or udev in a test."
    echo "services:"
    for svc in init broker ctl http worker; do
        echo "  $svc:"
        echo "    build: {network: host, args: {BASE: \"$BASE\", RUNTIME_BASE: \"$BASE\"}}"
    done
    echo "    volumes: [\"$T/usb:/dev/bus/usb\", \"$T/udev:/run/udev:ro\"]"
} >"$T/override.yml"

compose down -v --remove-orphans >/dev/null 2>&1 || true # a killed run's leftovers
rc=0
compose up -d --build >"$T/up.log" 2>&1 || rc=$?
check "docker-compose up -d --build succeeds (rc=$rc)" test "$rc" = 0
((rc == 0)) || { tail -n 30 "$T/up.log"; exit 1; }
phase "image built and stack started"

health() { "$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(compose ps -q "$1")" 2>/dev/null; }
all_healthy() {
    local s
    for s in broker ctl http worker; do [[ $(health "$s") == healthy ]] || return 1; done
}
if wait_until 240 all_healthy; then
    ok "broker, ctl, http and worker become healthy"
else
    not_ok "broker, ctl, http and worker become healthy ($(for s in broker ctl http worker; do printf '%s=%s ' "$s" "$(health "$s")"; done))"
fi
phase "healthy"
restarts=0
for s in init broker ctl http worker; do
    restarts=$((restarts + $("$DOCKER" inspect -f '{{.RestartCount}}' "$(compose ps -q "$s")" 2>/dev/null || echo 1000)))
done
check "no service restarted ($restarts restarts)" test "$restarts" = 0
check "init exited 0" test "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$(compose ps -q init)")" = 0
nofile=$("$DOCKER" exec "$(compose ps -q broker)" sh -c 'grep "Max open files" /proc/1/limits' | awk '{print $4, $5}')
check "the broker runs with its open-file limit raised to the hard limit ($nofile)" bash -c "read -r s h <<<'$nofile'; test \"\$s\" = \"\$h\""

# What init gave the operator.
compose logs --no-color init >"$T/init.log" 2>&1 || true
check "logs init says where the passwords of the default accounts are" grep -q "operator: the passwords of alice:client admin:operator are in passwords" "$T/init.log"
check "the passwords file is private (mode 600)" test "$(stat -c %a "$T/operator/passwords" 2>/dev/null)" = 600
PW=$(awk '$1 == "alice" {print $2}' "$T/operator/passwords" 2>/dev/null || true)
check "it holds alice's password" test -n "$PW"
check "  ... and the operator admin's" grep -qE '^admin [^ ]+$' "$T/operator/passwords"
check "and the CA is beside it" test -s "$T/operator/ca.crt"
compose logs --no-color worker >"$T/worker.log" 2>&1 || true
check "the worker runs simulated boards though compose names absent firmware files" grep -q 'simulated boards:' "$T/worker.log"

# A client session over mqtts with the lab CA, and the HTTP API.
cli=("$FARM_BIN/cli/icefarm-cli" --broker "mqtts://localhost:$MQTTS" --cafile "$T/operator/ca.crt" --user alice --password "$PW" --timeout 20)
four() { "${cli[@]}" --json available 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("amount") == 4 else 1)'; }
check "alice sees the worker's 4 simulated boards over mqtts" wait_until 60 four
BITS=$ROOT/tests/bitstreams
out=$("${cli[@]}" --json evaluate --boards 2 "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin" 2>"$T/eval.err" || true)
check "alice evaluates two bitstreams and gets each one's count" python3 - "$out" "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin" <<'PY'
import json, sys, zlib
rows = json.loads(sys.argv[1])
rows = rows.get("results", []) if isinstance(rows, dict) else rows
want = {f: zlib.crc32(open(f, "rb").read()) % 100000 for f in sys.argv[2:]}
sys.exit(0 if {r.get("file"): r.get("pulses") for r in rows} == want else 1)
PY
out=$(curl -sS --max-time 20 -u "alice:$PW" "http://127.0.0.1:$HTTP/available" 2>&1 || true)
check "the HTTP API answers alice on its published loopback port" grep -q '"amount"' <<<"$out"
check "a wrong password is refused" \
    bash -c "! '$FARM_BIN/cli/icefarm-cli' --broker mqtts://localhost:$MQTTS --cafile '$T/operator/ca.crt' --user alice --password nope --timeout 5 status >/dev/null 2>&1"
phase "client session"

# Teardown leaves nothing.
rc=0
compose down -v --remove-orphans >"$T/down.log" 2>&1 || rc=$?
check "docker-compose down -v succeeds" test "$rc" = 0
check "  ... no container of the stack is left" test -z "$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
check "  ... nor its volumes" test -z "$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
pid=$ENGINE_PID
engine_stop
check "our dockerd stopped" bash -c "! kill -0 $pid 2>/dev/null"
runtime_gone() { ! pgrep -f "containerd.*$CACHE/docker/exec" >/dev/null; }
check "  ... no containerd or shim of it is left" wait_until 10 runtime_gone
docker0_gone() { ! ip link show docker0 >/dev/null 2>&1; }
check "  ... docker0 is gone" docker0_gone
phase "torn down"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
