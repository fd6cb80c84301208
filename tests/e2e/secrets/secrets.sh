#!/usr/bin/env bash
# No secret on any command line (issue 16, item 2).
#
#   FARM_BIN=BUILD_DIR secrets.sh
#
# Starts the secured farm (FARM_SECURE=1 farm_start: TLS, passwords, the ACL
# plugin) with icefarm-http, and while the daemons run and clients work, reads
# /proc/PID/cmdline of every process on the machine: none may hold any of the
# passwords the farm generated. Then: the password files are 0600 in a 0700
# directory; a daemon refuses a password file that others may read (exit 2, and
# says why); --password still works for a person at a terminal but warns; a
# client that copies a retained lease, or forges one naming itself, plants
# nothing (only control publishes leases). Prints "ok - ..." per check and
# "N passed, M failed". Every wait has its own deadline; nothing is timed.
set -euo pipefail
: "${FARM_BIN:?set FARM_BIN to the build directory}"
FARM_BIN=$(cd "$FARM_BIN" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$HERE/../../../broker/embedded/farm.sh"
source "$HERE/../../lib/checks.sh" # ok, not_ok, check, wait_until

RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e-secrets.XXXXXX")
chmod 755 "$RUN" # the secured broker drops root before it reads its files under here
BG=()
cleanup() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    farm_stop
    if ((FAIL)); then tail -n 20 "$RUN"/*.log >&2 || true; fi
    rm -rf "$RUN"
}
trap cleanup EXIT
CLI=$FARM_BIN/cli/icefarm-cli

FARM_SECURE=1 farm_start "$RUN/farm" 2 --sim-flash-ms 20 --sim-window-ms 50
farm_start_http
check "the secured farm comes up with every password from a file" farm_wait_ready 2 90

# Every password the farm generated, from its files.
mapfile -t NAMES < <(ls "$FARM_SECRETS")
PWS=()
for n in "${NAMES[@]}"; do PWS+=("$(head -n 1 "$FARM_SECRETS/$n")"); done
check "the farm generated passwords for control, the worker, the gateway, alice and bob (${#PWS[@]})" \
    test "${#PWS[@]}" -ge 5
mode() { stat -c %a "$1"; }
check "the secrets directory is 0700" test "$(mode "$FARM_SECRETS")" = 700
bad_modes=""
for n in "${NAMES[@]}"; do [[ $(mode "$FARM_SECRETS/$n") == 600 ]] || bad_modes+=" $n"; done
check "every password file is 0600${bad_modes:+ (not:$bad_modes)}" test -z "$bad_modes"

# scan DIR SECONDS: reads every /proc/PID/cmdline on the machine again and again
# until $RUN/stop appears (or SECONDS pass); prints the number of scans, then each
# process whose command line held a password. The passwords are the first lines
# of the files in DIR.
scan() {
    python3 - "$1" "$RUN/stop" "$2" <<'PY'
import glob, os, sys, time
secrets, stop, limit = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
pws = [open(os.path.join(secrets, n), "rb").readline().strip() for n in os.listdir(secrets)]
pws = [p for p in pws if p]
found, scans = {}, 0
while True:
    for f in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            cmd = open(f, "rb").read()
        except OSError:
            continue  # gone, or not ours to read
        if any(p in cmd for p in pws):
            found[f] = cmd.replace(b"\0", b" ")[:120].decode(errors="replace")
    scans += 1
    if os.path.exists(stop) or time.monotonic() > limit:
        break
print(scans)
for f, cmd in found.items():
    print(f"{f}: {cmd}")
PY
}

# First, that the scan finds what it looks for: a process with a canary secret in argv.
mkdir -p "$RUN/canary"
canary=canary-$RANDOM$RANDOM
(umask 077 && echo "$canary" >"$RUN/canary/pw")
python3 -c 'import time; time.sleep(30)' "$canary" &
CANARY=$!
canary_found() { [[ $(scan "$RUN/canary" 0 | tail -n +2) == *"$canary"* ]]; }
check "the scan finds a secret on a command line when there is one" canary_found
kill "$CANARY" 2>/dev/null || true
wait "$CANARY" 2>/dev/null || true

# Clients at work while we look: alice reserves, evaluates and ends through the
# CLI (password file), bob asks through the HTTP shim (curl reads its login from
# a 0600 config file, not argv).
(umask 077 && printf 'user = "bob:%s"\n' "$(head -n 1 "$FARM_SECRETS/bob")" >"$RUN/curl.conf")
(
    for _ in 1 2 3; do
        "$CLI" --broker "$FARM_BROKER" "${FARM_CLI_AUTH[@]}" --timeout 20 --json evaluate --boards 1 \
            "$HERE/../../bitstreams/clk_1khz.bin" >>"$RUN/clients.log" 2>&1 || true
        curl -s -K "$RUN/curl.conf" "$FARM_HTTP/available" >>"$RUN/clients.log" 2>&1 || true
    done
) &
BG+=($!)
scan "$FARM_SECRETS" 90 >"$RUN/scan.out" &
SCAN=$!
wait "${BG[0]}" 2>/dev/null || true
touch "$RUN/stop"
wait "$SCAN" || true
found=$(tail -n +2 "$RUN/scan.out")
echo "# $(head -n 1 "$RUN/scan.out") scans of every /proc/PID/cmdline while clients worked"
check "no process's command line holds a password${found:+: $found}" test -z "$found"
all_alive() {
    local p
    for p in "${FARM_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}
check "the broker, control, the worker and the shim ran all along (${#FARM_PIDS[@]} processes)" all_alive
check "alice's evaluations went through with her password file" grep -q '"pulses"' "$RUN/clients.log"
check "bob's HTTP calls went through with his login from a file" grep -q '"amount"' "$RUN/clients.log"

# A password file others may read is refused, with the reason, before anything starts.
cp "$FARM_SECRETS/ctl" "$RUN/ctl-open"
chmod 644 "$RUN/ctl-open"
rc=0
"$FARM_BIN/ctl/icefarm-ctl" --broker "$FARM_BROKER" --user ctl --password-file "$RUN/ctl-open" \
    --data "$RUN/ctl-data2" >"$RUN/open.log" 2>&1 || rc=$?
check "icefarm-ctl refuses a password file of mode 0644 (exit $rc)" test "$rc" = 2
check "and says why" grep -q "is mode 0644: group or others may read it" "$RUN/open.log"
rc=0
ICEFARM_PASSWORD_FILE=$RUN/ctl-open "$FARM_BIN/wrk/icefarm-wrk" --broker "$FARM_BROKER" --user x --sim 1 \
    >"$RUN/open-wrk.log" 2>&1 || rc=$?
check "icefarm-wrk refuses it from ICEFARM_PASSWORD_FILE too (exit $rc)" test "$rc" = 2
printf 'broker = %s\nuser = http\npasword = x\n' "$FARM_BROKER" >"$RUN/http.conf"
rc=0
"$FARM_BIN/ctl/http/icefarm-http" --config "$RUN/http.conf" >"$RUN/conf.log" 2>&1 || rc=$?
check "icefarm-http refuses a config file with an unknown key (exit $rc)" test "$rc" = 2
check "naming the file, the line and the key" grep -qx "icefarm-http: $RUN/http.conf:3: unknown key pasword" "$RUN/conf.log"

# --password: for a person at a terminal; it works and warns.
alice_pw=$(head -n 1 "$FARM_SECRETS/alice")
rc=0
"$CLI" --broker "$FARM_BROKER" --cafile "$FARM_CA" --user alice --password "$alice_pw" --timeout 20 --json available \
    >"$RUN/pw.out" 2>"$RUN/pw.err" || rc=$?
check "--password still logs alice in (exit $rc)" grep -q amount "$RUN/pw.out"
check "--password warns that the process list shows it" grep -q "visible to every local user" "$RUN/pw.err"

# Only control publishes leases: a client's copy of a retained lease, or a lease
# it forges for itself, never becomes the retained lease.
mq() { # mq TOOL USER ARGS...: mosquitto_sub/pub with the login in an options file
    local tool=$1 user=$2 cfg
    shift 2
    cfg=$(mktemp -d "$RUN/mq.XXXXXX")
    (umask 077 && printf -- '-u %s\n-P %s\n' "$user" "$(head -n 1 "$FARM_SECRETS/$user")" >"$cfg/$tool")
    XDG_CONFIG_HOME=$cfg "$tool" -L "$FARM_BROKER/$TOPIC" --cafile "$FARM_CA" -V 5 "$@"
}
serials=$("$CLI" --broker "$FARM_BROKER" "${FARM_CLI_AUTH[@]}" --timeout 20 --json reserve --amount 1 2>>"$RUN/clients.log" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["serials"][0]["serial"])' 2>/dev/null || true)
check "alice reserves a board ($serials)" test -n "$serials"
TOPIC=icefarm/lease/$serials
mq mosquitto_sub ctl --retained-only -C 1 -W 5 >"$RUN/lease.bin" 2>/dev/null || true
check "control's retained lease names alice" grep -aq alice "$RUN/lease.bin"
# bob forges alice's lease into his own name (same length: "alice" -> "bob  " would
# break the msgpack, so rename the client field's bytes in place) and republishes both.
python3 - "$RUN/lease.bin" "$RUN/forged.bin" <<'PY'
import sys
b = open(sys.argv[1], "rb").read().rstrip(b"\n")
open(sys.argv[1], "wb").write(b)
open(sys.argv[2], "wb").write(b.replace(b"\xa5alice", b"\xa5bobby"))
PY
mq mosquitto_pub bob -r -q 1 -f "$RUN/lease.bin" >/dev/null 2>&1 || true
mq mosquitto_pub bob -r -q 1 -f "$RUN/forged.bin" >/dev/null 2>&1 || true
mq mosquitto_sub ctl --retained-only -C 1 -W 5 >"$RUN/lease2.bin" 2>/dev/null || true
check "the retained lease still names alice after bob's copies" \
    bash -c "grep -aq alice '$RUN/lease2.bin' && ! grep -aq bobby '$RUN/lease2.bin'"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
