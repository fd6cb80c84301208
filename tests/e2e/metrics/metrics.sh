#!/usr/bin/env bash
# Prometheus metrics end to end on the embedded farm (4 simulated boards):
# icefarm-ctl and icefarm-wrk with --metrics-listen, icefarm-http's /metrics, and
# icefarm-dhs with --metrics-listen against the fake DCSS (dhs_metrics.py, ~10 s).
# Every endpoint passes `promtool check metrics`; a scripted session (reserve,
# end, evaluate, a lease that expires, a board that breaks and is retried, HTTP
# calls, DCSS operations) moves each counter by exactly what it did; a killed
# worker is a failed scrape, not stale numbers. A USB/IP session on direct TCP
# and one through the broker tunnel (usbip_client.py session) move the worker's
# icefarm_wrk_usbip_* series by what the client saw; a reserve that waits shows in
# icefarm_ctl_waiting_reserves. (icefarm_mqtt_reconnects_total: reconnect.sh, a
# broker restart, heavy.) Waits are polling loops with generous deadlines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

if ! command -v promtool >/dev/null; then
    echo "skip: promtool not installed (apt install prometheus)"
    exit 77
fi

CTL_M=127.0.0.1:$(farm_free_port)
WRK_M=127.0.0.1:$(farm_free_port)
export FARM_CTL_ARGS="--metrics-listen $CTL_M"
USBIP_PORT=$(farm_free_port)
e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50 --metrics-listen "$WRK_M" \
    --usbip-listen "127.0.0.1:$USBIP_PORT" --usbip-host 127.0.0.1
farm_start_http
HTTP_M=${FARM_HTTP#http://}

# shellcheck source=prom.sh
source "$(dirname "${BASH_SOURCE[0]}")/prom.sh" # scrape, val, total, moved

for d in ctl:$CTL_M wrk:$WRK_M http:$HTTP_M; do
    check "icefarm-${d%%:*} serves /metrics" scrape "${d%%:*}" "${d#*:}"
    check "icefarm-${d%%:*}'s /metrics passes promtool check metrics" \
        bash -c "promtool check metrics <'$RUN/${d%%:*}.prom'"
done
check "docker/prometheus.yml passes promtool check config" promtool check config "$E2E_ROOT/docker/prometheus.yml"
check "the responder answers 404 for another path" \
    bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' http://$CTL_M/nope) == 404 ]]"
check "control counts 4 known boards ready" test "$(val ctl 'icefarm_ctl_boards{state="ready",kind="none"}')" = 4
check "control counts 1 worker online" test "$(val ctl 'icefarm_ctl_workers{state="online"}')" = 1
check "the worker counts 4 boards ready" test "$(val wrk 'icefarm_wrk_boards{state="ready"}')" = 4
check "the worker timed 4 or more default flashes" \
    test "$(val wrk 'icefarm_wrk_flash_duration_seconds_count{state="flashing",result="ok"}')" -ge 4
check "the MQTT connections count as up" test "$(val ctl 'icefarm_mqtt_connected')$(val wrk 'icefarm_mqtt_connected')$(val http 'icefarm_mqtt_connected')" = 111

# ---- a scripted session ----
scrape ctl "$CTL_M"
scrape wrk "$WRK_M"
G0=$(val ctl icefarm_ctl_grants_total)
E0=$(val ctl 'icefarm_ctl_lease_ends_total{reason="holder"}')
X0=$(val ctl icefarm_ctl_lease_expiries_total)
R0=$(val ctl 'icefarm_ctl_request_duration_seconds_count{verb="reserve"}')
N0=$(val ctl 'icefarm_ctl_request_duration_seconds_count{verb="end_all"}')
V0=$(val wrk 'icefarm_wrk_evaluations_total{kind="pulsecount"}')
F0=$(val wrk 'icefarm_wrk_evaluation_failures_total{kind="pulsecount"}')

cli m1 reserve --amount 2
check "reserve 2 boards exits 0 (got $RC)" test "$RC" = 0
scrape ctl "$CTL_M"
check "grants moved by 2" moved ctl icefarm_ctl_grants_total "$G0" 2
check "2 leases are held" test "$(val ctl icefarm_ctl_leases)" = 2
check "one reserve request was timed" moved ctl 'icefarm_ctl_request_duration_seconds_count{verb="reserve"}' "$R0" 1
cli m1 end-all
check "end-all exits 0 (got $RC)" test "$RC" = 0
scrape ctl "$CTL_M"
check "holder ends moved by 2" moved ctl 'icefarm_ctl_lease_ends_total{reason="holder"}' "$E0" 2
check "one end_all request was timed" moved ctl 'icefarm_ctl_request_duration_seconds_count{verb="end_all"}' "$N0" 1
check "no lease is held" test "$(val ctl icefarm_ctl_leases)" = 0

wait_until 60 available_is 4 || true
files=("$BITS"/*.bin)
cli m2 evaluate --boards 1 "${files[@]:0:3}"
check "evaluate 3 bitstreams on 1 board exits 0 (got $RC)" test "$RC" = 0
scrape ctl "$CTL_M"
check "grants moved by 3 in all (2 + 1)" moved ctl icefarm_ctl_grants_total "$G0" 3
check "holder ends moved by 3 in all (2 + 1)" moved ctl 'icefarm_ctl_lease_ends_total{reason="holder"}' "$E0" 3
scrape wrk "$WRK_M"
check "the worker counted 3 evaluations" moved wrk 'icefarm_wrk_evaluations_total{kind="pulsecount"}' "$V0" 3
check "and no failed evaluation" moved wrk 'icefarm_wrk_evaluation_failures_total{kind="pulsecount"}' "$F0" 0

wait_until 60 available_is 4 || true
cli m3 reserve --amount 1 --duration 1
check "reserve 1 board for 1 s exits 0 (got $RC)" test "$RC" = 0
expired() {
    scrape ctl "$CTL_M" && moved ctl icefarm_ctl_lease_expiries_total "$X0" 1
}
check "the lease expires and expiries move by 1" wait_until 30 expired
check "grants moved by 4 in all" moved ctl icefarm_ctl_grants_total "$G0" 4

# A board whose next flash fails: quarantined, then retried.
wait_until 60 available_is 4 || true
cli e2e-observer devices
W=$(jpy "$OUT" "sorted(j['serials'])[0]")
scrape wrk "$WRK_M"
B0=$(total wrk icefarm_wrk_boards_broken_total)
T0=$(val wrk icefarm_wrk_broken_retries_total)
check "inject 'flash_fail' on $W" sim_fault "$W" flash_fail 1
check "the worker armed it" wait_until 30 grep -q "serial=$W sim fault flash_fail x1: armed" "$RUN/wrk.log"
cli m4 reserve "$W"
broken_retried() {
    scrape wrk "$WRK_M" && [[ $(total wrk icefarm_wrk_boards_broken_total) == $((B0 + 1)) ]] &&
        moved wrk icefarm_wrk_broken_retries_total "$T0" 1
}
check "the board broke once and was retried once" wait_until 60 broken_retried
cli m4 end-all

# ---- a reserve that waits is counted while it waits ----
wait_until 60 available_is 4 || true
scrape ctl "$CTL_M"
check "no reserve is waiting" test "$(total ctl icefarm_ctl_waiting_reserves)" = 0
cli m5 reserve --amount 4
check "reserve all 4 boards exits 0 (got $RC)" test "$RC" = 0
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 60 --name m6 --json reserve --amount 1 --wait 60 \
    >"$RUN/waiter.out" 2>>"$RUN/cli.log" &
WAITER=$!
E2E_BG+=("$WAITER")
waiting() { scrape ctl "$CTL_M" && test "$(val ctl 'icefarm_ctl_waiting_reserves{kind="pulsecount"}')" = 1; }
check "a reserve that waits counts 1 in icefarm_ctl_waiting_reserves{kind=\"pulsecount\"}" wait_until 30 waiting
cli m5 end-all
RC=0
wait "$WAITER" || RC=$?
check "the waiting reserve is granted once boards come free (exit $RC)" test "$RC" = 0
scrape ctl "$CTL_M"
check "and no reserve waits any more" test "$(total ctl icefarm_ctl_waiting_reserves)" = 0
cli m6 end-all

# ---- USB/IP: a scripted session on each path moves the worker's usbip series ----
wait_until 60 available_is 4 || true
e2e_watch "$RUN/events.jsonl" 'icefarm/+/event'
UC=$E2E_ROOT/tests/e2e/usbip/usbip_client.py
usb() { "$PY" "$UC" "$@"; }
scrape wrk "$WRK_M"
cp "$RUN/wrk.prom" "$RUN/wrk0.prom" # the baseline of every usbip series
check "no USB/IP session is open" test "$(total wrk icefarm_wrk_usbip_sessions)" = 0
cli m7 reserve --amount 1 --kind usbip
userial=$(serials_of "$OUT")
check "reserve --kind usbip grants a board" test -n "$userial"
check "the worker exports it" e2e_wait_event "$RUN/events.jsonl" 60 "usbip exported" "$userial"
busid=$("$PY" -c 'import json, sys
for l in open(sys.argv[1]):
    p = json.loads(l)["payload"] if l.strip() else None
    if isinstance(p, dict) and p.get("event") == "usbip exported" and p.get("serial") == sys.argv[2]:
        print(p["busid"]); break' "$RUN/events.jsonl" "$userial")

# usession PATH HOST PORT: runs the scripted session in the background (its JSON
# line in $RUN/usbip.PATH.out), waits for it, checks what it saw and the series.
usession() {
    local path=$1 out=$RUN/usbip.$1.out
    "$PY" "$UC" session "$2" "$3" "$busid" 60 >"$out" 2>>"$RUN/usbip.err" & # $!: python itself
    USB_PID=$!
    E2E_BG+=("$USB_PID")
    check "$path: the scripted session ran" wait_until 30 test -s "$out"
    local r
    r=$(head -1 "$out")
    echo "# $path session: $r"
    check "$path: every URB answered 0, the pending IN unlinked (-ECONNRESET), the completed one 0" jtest "$r" \
        "j['status'] == 0 and j['statuses'] == [0, 0, 0] and j['unlink_pending']['status'] == -104 and j['unlink_completed']['status'] == 0"
    check "$path: GET_DESCRIPTOR read 18 bytes" jtest "$r" "j['bytes']['in'] == 18"
    UBIN=$(jpy "$r" "j['bytes']['in']")
    UBOUT=$(jpy "$r" "j['bytes']['out']")
    UURBS=$(jpy "$r" "j['urbs']")
    scrape wrk "$WRK_M"
    check "$path: 1 session open" test "$(val wrk "icefarm_wrk_usbip_sessions{path=\"$path\"}")" = 1
    check "$path: sessions_total moved by 1" moved wrk "icefarm_wrk_usbip_sessions_total{path=\"$path\"}" \
        "$(val wrk0 "icefarm_wrk_usbip_sessions_total{path=\"$path\"}")" 1
    check "$path: urbs_total moved by $UURBS" moved wrk "icefarm_wrk_usbip_urbs_total{path=\"$path\"}" \
        "$(val wrk0 "icefarm_wrk_usbip_urbs_total{path=\"$path\"}")" "$UURBS"
    check "$path: bytes in moved by $UBIN" moved wrk "icefarm_wrk_usbip_bytes_total{path=\"$path\",direction=\"in\"}" \
        "$(val wrk0 "icefarm_wrk_usbip_bytes_total{path=\"$path\",direction=\"in\"}")" "$UBIN"
    check "$path: bytes out moved by $UBOUT" moved wrk "icefarm_wrk_usbip_bytes_total{path=\"$path\",direction=\"out\"}" \
        "$(val wrk0 "icefarm_wrk_usbip_bytes_total{path=\"$path\",direction=\"out\"}")" "$UBOUT"
}
# usession_end PATH: the client dies (TCP closes; the tunnel's Will ends it): the gauge falls.
usession_end() {
    kill "$USB_PID" 2>/dev/null || true
    wait "$USB_PID" 2>/dev/null || true
    closed() { scrape wrk "$WRK_M" && test "$(val wrk "icefarm_wrk_usbip_sessions{path=\"$1\"}")" = 0; }
    check "$1: the session is no longer open once its client is gone" wait_until 30 closed "$1"
}

usession direct 127.0.0.1 "$USBIP_PORT"
r=$(usb import 127.0.0.1 "$USBIP_PORT" "$busid")
check "a second import meanwhile is refused busy" jtest "$r" "j['status'] == 2"
r=$(usb import 127.0.0.1 "$USBIP_PORT" "$(wrong_token "$busid")")
check "a wrong token is refused (Device not found)" jtest "$r" "j['status'] == 4"
scrape wrk "$WRK_M"
check "imports refused busy moved by 1" moved wrk 'icefarm_wrk_usbip_imports_refused_total{reason="busy"}' \
    "$(val wrk0 'icefarm_wrk_usbip_imports_refused_total{reason="busy"}')" 1
check "imports refused unknown_busid moved by 1" moved wrk 'icefarm_wrk_usbip_imports_refused_total{reason="unknown_busid"}' \
    "$(val wrk0 'icefarm_wrk_usbip_imports_refused_total{reason="unknown_busid"}')" 1
usession_end direct
usession tunnel "$FARM_BROKER" "$userial"
usession_end tunnel
scrape wrk "$WRK_M"
check "unlinks cancelled moved by 2 (one per session)" moved wrk 'icefarm_wrk_usbip_unlinks_total{result="cancelled"}' \
    "$(val wrk0 'icefarm_wrk_usbip_unlinks_total{result="cancelled"}')" 2
check "unlinks of completed URBs moved by 2" moved wrk 'icefarm_wrk_usbip_unlinks_total{result="completed"}' \
    "$(val wrk0 'icefarm_wrk_usbip_unlinks_total{result="completed"}')" 2
check "the direct path's series did not move with the tunnel's session" moved wrk 'icefarm_wrk_usbip_sessions_total{path="direct"}' \
    "$(val wrk0 'icefarm_wrk_usbip_sessions_total{path="direct"}')" 1
cli m7 end-all

# ---- the HTTP shim counts its own requests ----
scrape http "$HTTP_M"
A0=$(val http 'icefarm_http_requests_total{endpoint="/available",code="200"}')
O0=$(val http 'icefarm_http_requests_total{endpoint="other",code="404"}')
for _ in 1 2 3; do curl -s -o /dev/null "$FARM_HTTP/available"; done
curl -s -o /dev/null "$FARM_HTTP/no-such-thing"
scrape http "$HTTP_M"
check "http: /available 200 moved by 3" moved http 'icefarm_http_requests_total{endpoint="/available",code="200"}' "$A0" 3
check "http: an unknown path counts as other/404" moved http 'icefarm_http_requests_total{endpoint="other",code="404"}' "$O0" 1
check "http: /available latency observed 3 more times" test \
    "$(val http 'icefarm_http_request_duration_seconds_count{endpoint="/available"}')" -ge 3
for d in ctl:$CTL_M wrk:$WRK_M http:$HTTP_M; do
    check "icefarm-${d%%:*}'s /metrics still passes promtool after the session" \
        bash -c "curl -sf http://${d#*:}/metrics | promtool check metrics"
done

# ---- icefarm-dhs: a DCSS session against the fake DCSS ----
wait_until 60 available_is 4 || true
DHS_M=127.0.0.1:$(farm_free_port)
relay < <("$PY" "$E2E_DIR/../e2e/metrics/dhs_metrics.py" "$FARM_BIN" "$FARM_BROKER" "$RUN" "$BITS" "$DHS_M" \
    2>>"$RUN/dhs_metrics.err" || echo "not ok - dhs_metrics.py ended with status $?")

# ---- a frozen worker is counted hung; a process that is down is a failed scrape ----
workers_are() { # STATE: control counts the one worker in STATE and none online
    scrape ctl "$CTL_M" && test "$(val ctl "icefarm_ctl_workers{state=\"$1\"}")" = 1 &&
        { [[ $1 == online ]] || test "$(val ctl 'icefarm_ctl_workers{state="online"}')" = 0; }
}
kill -STOP "$(e2e_pid_of wrk)"
check "control counts the frozen worker hung, not online (missed heartbeats)" wait_until 10 workers_are hung
e2e_kill9 "$(e2e_pid_of wrk)"
check "the killed worker's /metrics refuses connections" bash -c "! curl -sf --max-time 5 http://$WRK_M/metrics >/dev/null"
check "control counts the killed worker reconnecting (in its grace), not online" wait_until 30 workers_are reconnecting
