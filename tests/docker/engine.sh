#!/usr/bin/env bash
# The lab stack on a real docker engine, brought up the way docker/compose.yml tells a
# lab to (`ICEFARM_SIM=4 docker-compose -f docker/compose.yml up -d --build`, Debian 12's
# docker-compose 1.29), plus an override that builds from a cached Debian base image with
# host networking, and environment that publishes every port on free loopback ports.
# Then a client session over mqtts with the lab CA and the password init gave the
# operator, the HTTP API through its published port, the dashboard bundled in the image
# (its /config.json naming the stack's wss listener, which takes a login), the optional
# dhs service against the fake DCSS on this host, and a teardown that leaves nothing.
#
# HEAVY (RelWithDebInfo pass only). Budget: 15 min on a fresh machine (debootstrap of
# the base image, about 6 min, then cached outside the clone in /var/cache/icefarm or
# ~/.cache/icefarm; the dashboard stage, about 70 s), 2 to 4 min afterwards (mostly
# compiling icefarm in the image: measured 1.8 min on 2 cores; the dashboard stage,
# Debian's nodejs and npm and `npm ci`, is kept under a tag of its own, so it is
# redone only when ctl/http/dashboard changes).
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
NPM_DIR=$ROOT/docker/build-npm NPM_MADE=0
DCSS_PID="" SUB_PID=""
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
        compose --profile dhs down -v --remove-orphans >/dev/null 2>&1 || true
        "$DOCKER" image prune -f >/dev/null 2>&1 || true # old builds; the tagged images' layers stay
    fi
    [[ -z $DCSS_PID ]] || kill "$DCSS_PID" 2>/dev/null || true
    [[ -z $SUB_PID ]] || kill "$SUB_PID" 2>/dev/null || true
    ((NPM_MADE == 0)) || rm -rf "$NPM_DIR"
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
export ICEFARM_WS_URL=wss://localhost:$WSS # what the dashboard's /config.json tells the browser
export ICEFARM_OPERATOR_DIR=$T/operator ICEFARM_FIRMWARE_DIR=$T/firmware
unset ICEFARM_USERS # compose.yml's default accounts
export ICEFARM_SIM=4 # the documented command for a lab with no boards
mkdir -p "$T/operator" "$T/firmware" "$T/usb" "$T/udev"
{
    echo "# tests/docker/engine.sh: build from the cached base with host networking (this"
    echo "# dockerd does no NAT); no host USB or udev in a test."
    echo "services:"
    for svc in init broker ctl http dhs worker; do
        echo "  $svc:"
        echo "    build: {network: host, args: {BASE: \"$BASE\", RUNTIME_BASE: \"$BASE\"}}"
    done
    echo "    volumes: [\"$T/usb:/dev/bus/usb\", \"$T/udev:/run/udev:ro\"]"
} >"$T/override.yml"

compose --profile dhs down -v --remove-orphans >/dev/null 2>&1 || true # a killed run's leftovers

# The dashboard's `npm ci` reaches the registry the way this host's npm does (here a
# TLS-inspecting proxy whose CA only the host trusts): docker/npm-settings.sh hands
# those settings to the build stage, as docker/README.md tells such a lab to.
if [[ ! -e $NPM_DIR ]] && command -v npm >/dev/null; then
    NPM_MADE=1
    "$ROOT/docker/npm-settings.sh" | sed 's/^/# /'
fi
# The dashboard stage under a tag of its own: the prune at the end keeps its layers
# (Debian's nodejs and npm, node_modules), so `up --build` below reuses them.
rc=0
"$DOCKER" build --network host --target dashboard --build-arg BASE="$BASE" --build-arg DASHBOARD=on \
    -t icefarm-enginetest-dashboard -f "$ROOT/docker/Dockerfile" "$ROOT" >"$T/dashboard-build.log" 2>&1 || rc=$?
check "the image's dashboard stage builds (Debian's nodejs and npm, npm ci, esbuild) (rc=$rc)" test "$rc" = 0
((rc == 0)) || tail -n 30 "$T/dashboard-build.log" | sed 's/^/# /'
phase "dashboard stage"
rc=0
compose up -d --build >"$T/up.log" 2>&1 || rc=$?
check "docker-compose up -d --build succeeds (rc=$rc)" test "$rc" = 0
((rc == 0)) || { tail -n 30 "$T/up.log"; exit 1; }
if ((NPM_MADE)); then # the build is over: nothing of the host's npm settings stays behind
    rm -rf "$NPM_DIR"
    NPM_MADE=0
fi
leftover=$("$DOCKER" run --rm --network none --entrypoint sh icefarm:latest -c \
    'find / -xdev \( -name ca.pem -o -name npmrc -o -name "build-npm*" -o -path /dashboard \) -print 2>/dev/null' 2>&1 || true)
check "the image that runs holds none of the build host's npm settings nor the dashboard stage [$leftover]" test -z "$leftover"
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

# The dashboard, bundled in the image and served by the http service at /.
page=$(curl -sS --max-time 10 "http://127.0.0.1:$HTTP/" 2>&1 || true)
check "/ serves the bundled dashboard page" grep -q '<script defer src="dashboard.js">' <<<"$page"
not_howto() { ! grep -q "The dashboard is not built" <<<"$page"; }
check "  ... not the page that says how to build it" not_howto
js=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download} %{content_type}' "http://127.0.0.1:$HTTP/dashboard.js" 2>&1 || true)
bundle() { [[ $js =~ ^200\ ([0-9]+)\ .*javascript ]] && ((BASH_REMATCH[1] > 100000)); }
check "  ... and its script, the esbuild bundle ($js)" bundle
cfg=$(curl -sS --max-time 10 "http://127.0.0.1:$HTTP/config.json" 2>&1 || true)
check "/config.json points the page at the stack's wss listener ($cfg)" python3 -c '
import json, sys
c = json.loads(sys.argv[1])
sys.exit(0 if c == {"broker": sys.argv[2], "secured": True, "bundled": True} else 1)' "$cfg" "$ICEFARM_WS_URL"
wss=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("broker") or "")' "$cfg" 2>/dev/null || true)
out=$(MQTT_PASSWORD=$PW python3 "$ROOT/tests/docker/wss_mqtt.py" "${wss:-none}" "$T/operator/ca.crt" alice 2>&1 || true)
check "  ... where alice logs in over TLS with the lab CA, as the page's MQTT client would ($out)" grep -q accepted <<<"$out"
phase "dashboard"

# The optional dhs service against the fake DCSS (tests/e2e/dhs/fake_dcss.py) on this
# host, listening on the compose network's gateway address so the container reaches it.
GW=$("$DOCKER" network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "${PROJECT}_default" 2>/dev/null || true)
check "the compose network has a gateway address on this host ($GW)" test -n "$GW"
python3 "$ROOT/tests/docker/dhs_dcss.py" "${GW:-127.0.0.1}" "$T/dcss.port" icefarm 4 90 >"$T/dcss.out" 2>&1 &
DCSS_PID=$!
wait_until 10 test -s "$T/dcss.port" || true
rc=0
ICEFARM_DCSS=$GW:$(cat "$T/dcss.port" 2>/dev/null) compose --profile dhs up -d dhs >"$T/dhs-up.log" 2>&1 || rc=$?
check "docker-compose --profile dhs up -d dhs succeeds (rc=$rc)" test "$rc" = 0
((rc == 0)) || tail -n 20 "$T/dhs-up.log" | sed 's/^/# /'
dcss_done() { ! kill -0 "$DCSS_PID" 2>/dev/null; }
check "the fake DCSS is done within 100 s" wait_until 100 dcss_done
wait "$DCSS_PID" 2>/dev/null || true
DCSS_PID=""
while IFS= read -r line; do
    case $line in
    "ok - "*) ok "${line#ok - }" ;;
    "not ok - "*) not_ok "${line#not ok - }" ;;
    *) echo "# $line" ;;
    esac
done <"$T/dcss.out"
check "  ... and ran its checks" grep -q "farm_list" "$T/dcss.out"
if ! grep -q "^ok - farm_list completes" "$T/dcss.out"; then
    compose --profile dhs logs --no-color --tail 30 dhs 2>&1 | sed 's/^/# /'
fi
phase "dhs"

# docker/prometheus.yml's targets, scraped from inside the compose network as Prometheus
# would (bash's /dev/tcp in the ctl container; the http job as the account init made
# for it), while the dhs service runs: each answers 200 with text promtool accepts.
check "init handed the operator the metrics scrape's password (prometheus-http.password)" test -s "$T/operator/prometheus-http.password"
scrape() { # TARGET [USER PASSWORD]: the raw HTTP answer of GET /metrics
    local auth=""
    [[ -z ${2:-} ]] || auth="Authorization: Basic $(printf '%s:%s' "$2" "$3" | base64 -w0)"
    "$DOCKER" exec "$(compose ps -q ctl)" timeout 10 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}" &&
        printf "GET /metrics HTTP/1.0\r\nHost: %s\r\n%s\r\n\r\n" "$1" "$2" >&3 && cat <&3' _ "$1" "$auth"
}
targets=$(python3 -c 'import re, sys
job = user = None
for line in open(sys.argv[1]):
    m = re.match(r"\s*- job_name:\s*(\S+)", line)
    if m:
        job, user = m.group(1), None
    m = re.match(r"\s*username:\s*(\S+)", line)
    if m:
        user = m.group(1)
    m = re.match(r"\s*- targets:\s*\[(.*)\]", line)
    if m:
        for t in re.findall(r"\"([^\"]+)\"", m.group(1)):
            print(job, t, user or "-")' "$ROOT/docker/prometheus.yml")
check "docker/prometheus.yml names the stack's four metrics targets (${targets//$'\n'/ })" test "$(wc -l <<<"$targets")" = 4
while read -r job target user; do
    pw=""
    [[ $user == - ]] || pw=$(cat "$T/operator/prometheus-http.password" 2>/dev/null)
    [[ $user == - ]] && user=""
    scrape "$target" "$user" "$pw" >"$T/scrape.out" 2>&1 || true
    ok200() { head -n 1 "$T/scrape.out" | grep -q "^HTTP/1.[01] 200"; }
    valid() { sed '1,/^\r\?$/d' "$T/scrape.out" | tr -d '\r' | promtool check metrics >/dev/null 2>&1 && grep -q '^# TYPE' "$T/scrape.out"; }
    if ok200 && { ! command -v promtool >/dev/null || valid; }; then
        ok "$job scrapes $target on the compose network${user:+ as $user}"
    else
        not_ok "$job scrapes $target on the compose network${user:+ as $user}: $(head -c 300 "$T/scrape.out")"
    fi
done <<<"$targets"
phase "metrics"

# Kind usbip through the worker's published USB/IP port, Debian's usbip tools as the
# peer: alice hears the busid token on her board's event topic (the only place it is
# said), `usbip list` shows nothing, `usbip attach` gets through the import and fails
# only at the vhci driver this host lacks, and the export ends with the lease.
USBIP_TOOL=$(command -v usbip || echo /usr/sbin/usbip)
"${cli[@]}" sub 'icefarm/+/event' icefarm/ctl/state >"$T/events.jsonl" 2>"$T/sub.err" &
SUB_PID=$!
subscribed() { grep -q '"icefarm/ctl/state"' "$T/events.jsonl"; }
check "alice subscribes to her boards' events (control's retained state came after it)" wait_until 20 subscribed
out=$("${cli[@]}" --json reserve --amount 1 --kind usbip 2>"$T/reserve.err" || true)
serial=$(python3 -c 'import json, sys
s = json.loads(sys.argv[1]).get("serials", [])
print(s[0] if isinstance(s[0], str) else s[0]["serial"])' "$out" 2>/dev/null || true)
check "alice reserves a board of kind usbip ($serial)" test -n "$serial"
# export_field FIELD: FIELD of the first "usbip exported" event of the board.
export_field() {
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    p = json.loads(line).get("payload")
    if isinstance(p, dict) and p.get("event") == "usbip exported" and p.get("serial") == sys.argv[2]:
        print(p[sys.argv[3]]); break' "$T/events.jsonl" "$serial" "$1" 2>/dev/null
}
exported() { [[ -n $(export_field busid) ]]; }
check "the worker says 'usbip exported' to alice" wait_until 60 exported
busid=$(export_field busid)
check "  ... naming a busid token and compose's advertised host and port ($(export_field host):$(export_field port))" \
    test "$(export_field host):$(export_field port)" = "localhost:3240"
"$USBIP_TOOL" --tcp-port "$USBIP" list -r 127.0.0.1 >"$T/usbip-list.out" 2>&1 || true
check "usbip list -r 127.0.0.1 on the published port answers: no exportable devices" \
    grep -q "no exportable devices found on 127.0.0.1" "$T/usbip-list.out"
"$USBIP_TOOL" --tcp-port "$USBIP" attach -r 127.0.0.1 -b "$busid" >"$T/usbip-attach.out" 2>&1 || true
check "usbip attach -b TOKEN gets through the import, failing only at the vhci driver ($(tr '\n' ' ' <"$T/usbip-attach.out"))" \
    bash -c "grep -q vhci '$T/usbip-attach.out' && ! grep -qi 'not found\|different busid\|op_import_reply\|connect' '$T/usbip-attach.out'"
"${cli[@]}" end "$serial" >/dev/null 2>&1 || true
refused() {
    "$USBIP_TOOL" --tcp-port "$USBIP" attach -r 127.0.0.1 -b "$busid" >"$T/usbip-after.out" 2>&1 || true
    grep -qi "device not found" "$T/usbip-after.out"
}
check "  ... and once alice ends the lease the token is refused (Device not found)" wait_until 10 refused
kill "$SUB_PID" 2>/dev/null || true
wait "$SUB_PID" 2>/dev/null || true
SUB_PID=""
phase "usbip"

# Teardown leaves nothing.
rc=0
compose --profile dhs down -v --remove-orphans >"$T/down.log" 2>&1 || rc=$?
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
