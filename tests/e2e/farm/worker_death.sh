#!/usr/bin/env bash
# A worker killed with SIGKILL (no goodbye, only its Will): control notices at
# once and none of its boards is available while it is gone; the holder of its
# boards hears "worker reconnecting" and keeps its leases for the grace
# (--worker-grace, 4 s here: PROTOCOL.md 14.1). A restarted worker is a new
# process instance: the leases end with "failure" and "reservation end" at once.
# A worker that does not come back: the same when the grace runs out. Its boards
# are available again when it is back (same name and sim count: same serials).
# A frozen worker (SIGSTOP): its missed heartbeats stop grants on its boards
# within 3 s but end no lease; SIGCONT within the keep-alive and nothing else
# happens. Frozen past the keep-alive: the Will starts the grace, and the same
# process coming back keeps its leases ("worker reconnected"). Control's
# verdict is public on icefarm/farm/worker/<id> (PROTOCOL.md 7.8) at each step.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
FARM_CTL_ARGS="--worker-grace 4"

# libmosquitto refuses keep-alives under 5 s: a worker asked for 2 must either
# work or refuse to start, never run without ever connecting.
e2e_farm_launch 4 --keepalive 2 --sim-window-ms 50 --sim-flash-ms 50
WRK=$(e2e_pid_of wrk)
ready_or_exited() { ! kill -0 "$WRK" 2>/dev/null || farm_wait_ready 4 1 2>/dev/null; }
wait_until 30 ready_or_exited || true
if kill -0 "$WRK" 2>/dev/null; then
    if farm_wait_ready 4 1 2>/dev/null; then
        ok "a worker with --keepalive 2 connects and serves its 4 boards"
    else
        not_ok "a worker with --keepalive 2 connects, or refuses to start (it runs but never connected)"
        e2e_stop "$WRK" || true
        E2E_WRK_ARGS=(--keepalive 5 --sim-window-ms 50 --sim-flash-ms 50)
        e2e_start_wrk
    fi
else
    RC=0
    wait "$WRK" || RC=$?
    E2E_KILLED[$WRK]=1
    check "a worker with --keepalive 2 refuses to start, saying why (status $RC)" \
        bash -c "[[ $RC != 0 ]] && grep -qi keepalive '$RUN/wrk.log'"
    E2E_WRK_ARGS=(--keepalive 5 --sim-window-ms 50 --sim-flash-ms 50)
    e2e_start_wrk
fi
check "the farm is up with 4 boards (worker ${E2E_WRK_ARGS[*]})" farm_wait_ready 4 60

HOLDER=holder
EV=$RUN/events.jsonl
check "a raw MQTT watcher is subscribed to icefarm/client/$HOLDER/event" \
    e2e_watch "$EV" "icefarm/client/$HOLDER/event"
cli e2e-observer devices
ALL=$(jpy "$OUT" "sorted(j['serials'])")

cli "$HOLDER" reserve --amount 2
check "the holder reserves 2 boards (got $RC)" test "$RC" = 0
S1=$(serials_of "$OUT" | sed -n 1p)
S2=$(serials_of "$OUT" | sed -n 2p)
check "2 boards are left available" available_is 2

WRK=$(e2e_pid_of wrk)
check "the worker is the last farm process" test "$WRK" = "${FARM_PIDS[${#FARM_PIDS[@]} - 1]}"
e2e_kill9 "$WRK"
ok "kill -9 the worker (pid $WRK)"

check "available drops to 0" wait_until 60 available_is 0
for s in "$S1" "$S2"; do
    check "the holder hears 'worker reconnecting' for $s" e2e_wait_event "$EV" 30 "worker reconnecting" "$s"
done
check "status: the worker is reconnecting, both leases are kept" status_has \
    "[w['state'] for w in j['workers']] == ['reconnecting'] and len(j['leases']) == 2"
cli e2e-observer status
INSTANCE=$(jpy "$OUT" "j['workers'][0]['instance']")
e2e_start_wrk
ok "restart the worker at once (a new process instance)"
for s in "$S1" "$S2"; do
    check "the holder hears 'failure' for $s" e2e_wait_event "$EV" 60 failure "$s"
    check "the holder hears 'reservation end' for $s" e2e_wait_event "$EV" 60 "reservation end" "$s"
done
check "they say why: the worker restarted" "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
why = [e.get("reason") for e in ev if e["event"] in ("failure", "reservation end")]
sys.exit(0 if why and set(why) == {"worker restarted"} else "events: %r" % ev)' "$EV"
check "status: the worker is online as another instance, no lease is left" status_has \
    "[w['state'] for w in j['workers']] == ['online'] and j['workers'][0]['instance'] != $INSTANCE and j['leases'] == []"
check "all 4 boards become available again" wait_until 60 available_is 4

# Killed and not back within the grace: the leases end when it runs out.
EVG=$RUN/events-grace.jsonl
check "a watcher for this part is subscribed" e2e_watch "$EVG" "icefarm/client/$HOLDER/event"
cli "$HOLDER" reserve --amount 2
check "the holder reserves 2 boards again (got $RC)" test "$RC" = 0
G1=$(serials_of "$OUT" | sed -n 1p)
WRK=$(e2e_pid_of wrk)
e2e_kill9 "$WRK"
ok "kill -9 the worker again (pid $WRK), and leave it dead"
check "the holder hears 'worker reconnecting' for $G1" e2e_wait_event "$EVG" 30 "worker reconnecting" "$G1"
check "the holder hears 'failure' for $G1 when the 4 s grace runs out" e2e_wait_event "$EVG" 30 failure "$G1"
check "the holder hears 'reservation end' for $G1" e2e_wait_event "$EVG" 30 "reservation end" "$G1"
check "both say why: the worker did not come back within 4 s" "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
why = {e["event"]: e.get("reason") for e in ev if e.get("serial") == sys.argv[2] and e["event"] in ("failure", "reservation end")}
sys.exit(0 if set(why.values()) == {"worker did not come back within 4 s"} and len(why) == 2 else "events: %r" % ev)' "$EVG" "$G1"
check "status: the worker is offline and no lease is left" status_has \
    "[w['online'] for w in j['workers']] == [False] and j['leases'] == []"
check "status: no board is available" status_has "not any(b['available'] for b in j['boards'])"
cli other reserve --amount 1
check "reserve --amount 1 while the worker is gone exits 4 (got $RC)" test "$RC" = 4
cli other reserve "$S1"
check "reserve of one of its serials while it is gone is refused (got $RC)" bash -c "[[ $RC != 0 ]]"

e2e_start_wrk
ok "restart the worker with the same name and --sim 4"
check "all 4 boards become available again" wait_until 60 available_is 4
cli e2e-observer devices
check "the same 4 serials are back" jtest "$OUT" "sorted(j['serials']) == $ALL"
check "status: the worker is online again" status_has "[w['online'] for w in j['workers']] == [True]"
cli "$HOLDER" reserve --amount 4
check "the holder can reserve all 4 boards again (got $RC)" test "$RC" = 0
cli "$HOLDER" end-all
check "and end them (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$(grep -c . <<<\"\$1\") == 4 ]]" _ "$(serials_of "$OUT")"
check "status shows no leases" status_has "j['leases'] == []"

# A frozen worker (SIGSTOP) keeps its TCP connection open: its heartbeats stop,
# so control stops granting its boards within 3 s (PROTOCOL.md 14.2), and ends no
# lease. SIGCONT before the keep-alive runs out: nothing else happens.
check "all 4 boards are available before freezing the worker" wait_until 60 available_is 4
EV2=$RUN/events2.jsonl
check "a second watcher is subscribed" e2e_watch "$EV2" "icefarm/client/$HOLDER/event"
LIVE=$RUN/liveness.jsonl
check "a watcher of control's verdicts is subscribed (icefarm/farm/worker/+)" e2e_watch "$LIVE" "icefarm/farm/worker/+"
# live_verdict last|seen STATE [REASON_REGEX]: the last verdict on the worker
# (or any since the watcher subscribed) has STATE and a matching reason; a
# reconnecting one must say until when.
live_verdict() {
    "$PY" - "$LIVE" "${FARM_WORKER:-sim-worker}" "$@" <<'PYEOF'
import json, re, sys
path, worker, which, state = sys.argv[1:5]
rx = sys.argv[5] if len(sys.argv) > 5 else ""
vs = []
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m["topic"] == "icefarm/farm/worker/" + worker and isinstance(m.get("payload"), dict):
        vs.append(m["payload"])
def good(p):
    return (p.get("state") == state and p.get("worker") == worker and re.search(rx, p.get("reason", ""))
            and (state != "reconnecting" or p.get("until", 0) > 0))
sys.exit(0 if (vs and good(vs[-1]) if which == "last" else any(map(good, vs))) else 1)
PYEOF
}
check "control's retained verdict on the worker says online" wait_until 10 live_verdict last online '^$'
cli "$HOLDER" reserve --amount 2
check "the holder reserves 2 boards (got $RC)" test "$RC" = 0
F1=$(serials_of "$OUT" | sed -n 1p)
F2=$(serials_of "$OUT" | sed -n 2p)
check "2 boards are left available" wait_until 30 available_is 2
WRK=$(e2e_pid_of wrk)
kill -STOP "$WRK"
T0=$SECONDS
ok "kill -STOP the worker (pid $WRK)"
check "available drops to 0 (missed heartbeats)" wait_until 10 available_is 0
check "... within 3 s (the heartbeat watch, not the 7.5 s keep-alive; took about $((SECONDS - T0)) s)" \
    test $((SECONDS - T0)) -le 3
check "status: the worker is hung, its 2 leases stay" status_has \
    "[w['state'] for w in j['workers']] == ['hung'] and len(j['leases']) == 2"
human_status() { "$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 status 2>>"$RUN/cli.log"; }
check "icefarm-cli status (as printed) says HUNG, not online" grep -qE '^[^ ]+ +HUNG ' <<<"$(human_status)"
check "control's verdict on icefarm/farm/worker/<id> says hung, and why" \
    live_verdict last hung '^no heartbeat for [0-9]+ ms \(one is due every [0-9]+ ms\)$'
kill -CONT "$WRK"
ok "kill -CONT the worker after about $((SECONDS - T0)) s"
check "its 2 free boards are available again" wait_until 30 available_is 2
check "status: online, both leases kept" status_has \
    "[w['state'] for w in j['workers']] == ['online'] and len(j['leases']) == 2"
check "icefarm-cli status (as printed) says online again" grep -qE '^[^ ]+ +online ' <<<"$(human_status)"
check "control's verdict says online again" wait_until 10 live_verdict last online '^$'
check "the holder heard no failure and no reservation end" \
    bash -c "! grep -qE '\"(failure|reservation end)\"' '$EV2'"

# Frozen past the keep-alive (7.5 s): the Will starts the 4 s grace. SIGCONT
# before the grace ends: the same process reconnects and keeps its leases.
kill -STOP "$WRK"
ok "kill -STOP the worker again"
for s in "$F1" "$F2"; do
    check "the holder hears 'worker reconnecting' for $s (the Will)" e2e_wait_event "$EV2" 30 "worker reconnecting" "$s"
done
check "control's verdict said reconnecting, why and until when" live_verdict seen reconnecting 'connection died'
kill -CONT "$WRK"
ok "kill -CONT the worker within the grace"
for s in "$F1" "$F2"; do
    check "the holder hears 'worker reconnected' for $s" e2e_wait_event "$EV2" 30 "worker reconnected" "$s"
done
check "status: online, both leases kept" status_has \
    "[w['state'] for w in j['workers']] == ['online'] and len(j['leases']) == 2"
check "control's verdict says online after the reconnect" wait_until 10 live_verdict last online '^$'
check "the holder heard no failure and no reservation end" \
    bash -c "! grep -qE '\"(failure|reservation end)\"' '$EV2'"
check "the reserved boards still serve their holder" status_has \
    "sorted(b['state'] for b in j['boards'] if b['serial'] in ('$F1', '$F2')) == ['reserved', 'reserved']"
cli "$HOLDER" end-all
check "the holder ends both (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$(grep -c . <<<\"\$1\") == 2 ]]" _ "$(serials_of "$OUT")"
check "status shows no leases at the end" status_has "j['leases'] == []"
check "all 4 boards are available at the end" wait_until 60 available_is 4
