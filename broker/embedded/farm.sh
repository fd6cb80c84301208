# shellcheck shell=bash
# shellcheck disable=SC2034 # FARM_* are the launcher's outputs, read by whoever sources it
# The embedded farm: a private Mosquitto, icefarm-ctl and one simulated worker on
# this machine, on free loopback ports. Sourced by ./icefarm (demo, up) and by the
# end-to-end tests so that all of them run exactly the same farm.
#
#   farm_start DIR BOARDS [icefarm-wrk options...]   needs FARM_BIN (the build dir)
#   farm_wait_ready BOARDS SECONDS
#   farm_stop
#   farm_start_http [HOST:PORT]                        icefarm-http on the running farm
#   FARM_SECURE=1 before farm_start: TLS, passwords and the ACL plugin (see
#   farm_secure_setup); FARM_USERS then lists "name password" of the demo users
#   (alice and bob: clients; oscar: an operator, who may reboot and delete any board;
#   dana: a read-only dashboard),
#   and FARM_SECRETS is the 0700 directory of every user's password file (0600):
#   pass passwords as --password-file "$FARM_SECRETS/alice", never on a command line.
#   FARM_PORT=N before farm_start: the broker's MQTT port (default: a free one).
# After farm_start: FARM_BROKER (mqtt://127.0.0.1:PORT), FARM_WS (ws://...), FARM_DIR;
# after farm_start_http: FARM_HTTP (http://HOST:PORT).

FARM_PIDS=()
# What each process of FARM_PIDS is and where it logs, by pid ("what|log file"):
# ./icefarm up names the one that died and shows its last lines.
declare -gA FARM_WHAT=()

farm_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

farm_log() { printf '%s\n' "$*" >&2; }

# An ASan build's ACL plugin needs the sanitizer runtimes preloaded into the
# (uninstrumented) broker: puts a `mosquitto` wrapper that does so first on PATH.
# A no-op for normal builds. farm_sanitized_broker DIR (a scratch directory).
# shellcheck disable=SC2153 # FARM_BIN is set by the caller (see the top of this file)
farm_sanitized_broker() {
    local dir=$1 preload="" lib p real
    # Not `ldd | grep -q`: under pipefail grep's early exit kills ldd with SIGPIPE now
    # and then, the pipeline fails, and the broker would start without the runtimes.
    [[ $(ldd "$FARM_BIN/broker/plugin/icefarm_acl.so" 2>/dev/null) == *libasan* ]] || return 0
    mkdir -p "$dir/bin"
    for lib in libasan.so libubsan.so; do
        p=$(gcc -print-file-name="$lib" 2>/dev/null || true)
        [[ $p == /* && -e $p ]] && preload+="${preload:+:}$(realpath "$p")"
    done
    real=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    printf '#!/bin/sh\nLD_PRELOAD=%s ASAN_OPTIONS=detect_leaks=0 exec %s "$@"\n' "$preload" "$real" >"$dir/bin/mosquitto"
    chmod 755 "$dir/bin/mosquitto"
    PATH=$dir/bin:$PATH
}

# Waits until HOST:PORT accepts TCP connections.
farm_wait_port() {
    local port=$1 tries=${2:-100}
    while ((tries-- > 0)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Credentials each component starts with (empty in the anonymous farm).
FARM_CTL_AUTH=() FARM_WRK_AUTH=() FARM_HTTP_AUTH=() FARM_CLI_AUTH=() FARM_DHS_AUTH=() FARM_USERS=()

# The secured farm's broker: a lab CA and certificates, a password file and
# roles for control, the worker, the HTTP gateway, two demo clients (alice,
# bob) and an operator (oscar), and the broker/secure configuration with the
# icefarm_acl plugin.
farm_secure_setup() {
    local dir=$1 port=$2 ws=$3 sec
    sec="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/secure"
    chmod 755 "$dir" # the broker drops root before it reads its files
    farm_sanitized_broker "$dir"
    "$sec/make-certs.sh" "$dir/certs" >/dev/null
    mkdir -p "$dir/etc"
    local worker=${FARM_WORKER:-sim-worker} pw
    new_user() { "$sec/add-user.sh" "$dir/etc" "$1" "$2" --generate 2>/dev/null | tail -n 1; }
    # Passwords reach the daemons and the CLI only through files (mode 0600 in a
    # 0700 directory), never through argv, which every local user can read.
    mkdir -p "$dir/secrets"
    chmod 700 "$dir/secrets"
    save_secret() { (umask 077 && printf '%s\n' "$2" >"$dir/secrets/$1"); }
    local ca="$dir/certs/ca.crt" u
    for u in "ctl control" "$worker worker" "http gateway" "dhs client"; do
        pw=$(new_user "${u%% *}" "${u#* }") && save_secret "${u%% *}" "$pw"
    done
    FARM_CTL_AUTH=(--user ctl --password-file "$dir/secrets/ctl" --cafile "$ca")
    FARM_WRK_AUTH=(--user "$worker" --password-file "$dir/secrets/$worker" --cafile "$ca")
    FARM_HTTP_AUTH=(--user http --password-file "$dir/secrets/http" --cafile "$ca")
    FARM_DHS_AUTH=(--user dhs --password-file "$dir/secrets/dhs" --cafile "$ca") # icefarm-dhs: its own client user
    local alice bob oscar dana
    alice=$(new_user alice client)
    bob=$(new_user bob client)
    oscar=$(new_user oscar operator)
    dana=$(new_user dana dashboard)
    save_secret alice "$alice"
    save_secret bob "$bob"
    save_secret oscar "$oscar"
    save_secret dana "$dana"
    FARM_USERS=("alice $alice" "bob $bob" "oscar $oscar" "dana $dana")
    FARM_CLI_AUTH=(--user alice --password-file "$dir/secrets/alice" --cafile "$ca")
    FARM_SECRETS=$dir/secrets
    FARM_CA=$ca
    sed -e "s,@HOST@,127.0.0.1," -e "s,@MQTTS_PORT@,$port," -e "s,@WSS_PORT@,$ws," -e "s,@CERTS@,$dir/certs," \
        -e "s,@ETC@,$dir/etc," -e "s,@PLUGIN@,$FARM_BIN/broker/plugin/icefarm_acl.so," \
        "$sec/secure.conf.in" >"$dir/mosquitto.conf"
}

farm_start() {
    local dir=$1 boards=$2
    shift 2
    FARM_DIR=$dir
    mkdir -p "$dir"
    local port ws
    port=${FARM_PORT:-$(farm_free_port)}
    ws=$(farm_free_port)
    if [[ -n ${FARM_SECURE:-} ]]; then
        farm_secure_setup "$dir" "$port" "$ws"
        FARM_BROKER="mqtts://localhost:$port"
        FARM_WS="wss://localhost:$ws"
    else
        sed -e "s/@PORT@/$port/" -e "s/@WSPORT@/$ws/" -e "s/@HOST@/127.0.0.1/" \
            "$(dirname "${BASH_SOURCE[0]}")/embedded.conf.in" >"$dir/mosquitto.conf"
        FARM_BROKER="mqtt://127.0.0.1:$port"
        FARM_WS="ws://127.0.0.1:$ws"
    fi
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    FARM_PIDS+=($!)
    FARM_WHAT[$!]="the broker (mosquitto)|$dir/mosquitto.log"
    if ! farm_wait_port "$port"; then
        farm_log "the broker did not start; see $dir/mosquitto.log"
        return 1
    fi
    local ctl_args=()
    read -ra ctl_args <<<"${FARM_CTL_ARGS:-}" # extra options for control, space-separated
    "$FARM_BIN/ctl/icefarm-ctl" --broker "$FARM_BROKER" "${FARM_CTL_AUTH[@]}" --data "$dir/ctl-data" \
        "${ctl_args[@]}" >"$dir/ctl.log" 2>&1 &
    FARM_PIDS+=($!)
    FARM_WHAT[$!]="control (icefarm-ctl)|$dir/ctl.log"
    "$FARM_BIN/wrk/icefarm-wrk" --broker "$FARM_BROKER" "${FARM_WRK_AUTH[@]}" --name "${FARM_WORKER:-sim-worker}" \
        --sim "$boards" "$@" >"$dir/wrk.log" 2>&1 &
    FARM_PIDS+=($!)
    FARM_WHAT[$!]="the worker (icefarm-wrk)|$dir/wrk.log"
}

# icefarm-http on the running farm (default: a free loopback port). It is appended
# to FARM_PIDS after the broker, control and worker, so farm_stop stops it first.
farm_start_http() {
    local listen=${1:-127.0.0.1:$(farm_free_port)}
    "$FARM_BIN/ctl/http/icefarm-http" --broker "$FARM_BROKER" "${FARM_HTTP_AUTH[@]}" --listen "$listen" --ws-url "$FARM_WS" \
        >"$FARM_DIR/http.log" 2>&1 &
    FARM_PIDS+=($!)
    FARM_WHAT[$!]="the HTTP API (icefarm-http)|$FARM_DIR/http.log"
    FARM_HTTP="http://$listen"
    if ! farm_wait_port "${listen##*:}"; then
        farm_log "icefarm-http did not start on $listen; see $FARM_DIR/http.log"
        return 1
    fi
}

# icefarm-dhs on the running farm, connecting to DCSS at HOST:PORT (it retries with
# back-off until DCSS is there). Name and protocol from ICEFARM_DHS_NAME (icefarm)
# and ICEFARM_DHS_PROTOCOL (2). Appended to FARM_PIDS like icefarm-http.
farm_start_dhs() {
    "$FARM_BIN/ctl/dhs/icefarm-dhs" --dcss "$1" --broker "$FARM_BROKER" "${FARM_DHS_AUTH[@]}" \
        --name "${ICEFARM_DHS_NAME:-icefarm}" --protocol "${ICEFARM_DHS_PROTOCOL:-2}" >"$FARM_DIR/dhs.log" 2>&1 &
    FARM_PIDS+=($!)
    FARM_WHAT[$!]="the DCSS gateway (icefarm-dhs)|$FARM_DIR/dhs.log"
}

# Waits until control reports BOARDS boards available.
farm_wait_ready() {
    local want=$1 secs=${2:-60} n=0
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        n=$("$FARM_BIN/cli/icefarm-cli" --broker "$FARM_BROKER" "${FARM_CLI_AUTH[@]}" --timeout 2 --json available 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin).get("amount",0))' 2>/dev/null || true)
        n=${n:-0}
        if ((n >= want)); then return 0; fi
        sleep 0.2
    done
    farm_log "only $n of $want boards became ready within ${secs}s; logs in $FARM_DIR"
    return 1
}

# Stops the farm: SIGTERM (each process shuts down cleanly), then SIGKILL
# whatever is still there after 5 s, so nothing is ever left behind.
farm_stop() {
    local i pid
    # Newest first, so the worker and control say goodbye while the broker is up.
    for ((i = ${#FARM_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${FARM_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        local t
        for ((t = 0; t < 100; t++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    FARM_PIDS=()
    FARM_WHAT=()
}

# Injects a fault into a simulated board: farm_sim_fault SERIAL FAULT [COUNT]
# (faults: hang, watchdog, disconnect, unplug, slow_flash, wrong_fw, flash_fail,
# or "plug" to plug an unplugged board back in). The payload is msgpack
# {v:1, serial, fault, count}, built with the Python standard library only.
farm_sim_fault() {
    local serial=$1 fault=$2 count=${3:-1} f
    f=$(mktemp)
    python3 - "$serial" "$fault" "$count" "$f" <<'PY'
import sys
def s(x):
    b = x.encode()
    return bytes([0xa0 | len(b)]) + b if len(b) < 32 else b"\xd9" + bytes([len(b)]) + b
serial, fault, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
n = bytes([count]) if count < 128 else b"\xcd" + count.to_bytes(2, "big")
open(out, "wb").write(b"\x84" + s("v") + b"\x01" + s("serial") + s(serial) + s("fault") + s(fault) + s("count") + n)
PY
    mosquitto_pub -L "$FARM_BROKER/icefarm/worker/${FARM_WORKER:-sim-worker}/sim" -q 1 -f "$f"
    rm -f "$f"
}
