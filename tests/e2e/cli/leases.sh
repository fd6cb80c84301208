#!/usr/bin/env bash
# Leases as a lab engineer meets them through icefarm-cli: extend never shortens
# unless --set, says the new end and when it was capped; end/extend of serials
# that are unknown, someone else's or already ended name each one and exit 1;
# a plain `watch` never extends; reserve warns at once when the farm is too
# small; status marks your boards and says when leases end, with a zone; who;
# the embedded farm's env file; a broker that is not an icefarm farm. Every CLI
# call is bounded (timeout), and its exit code is checked.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50

# hcli NAME ARGS...: the human output (no --json); sets RC, OUT, ERR, TOOK (ms).
hcli() {
    local name=$1
    shift
    cli_run 30 --broker "$FARM_BROKER" --timeout 10 --name "$name" "$@"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
lease_until() { # lease_until SERIAL: the lease's end (ms) from status
    cli e2e-observer status
    jpy "$OUT" "[l['until'] for l in j['leases'] if l['serial'] == '$1'][0]"
}

# ---- extend: later, never earlier, unless --set ----
cli alice reserve --amount 2 --duration 3600
check "alice reserves 2 boards for an hour (rc $RC)" test "$RC" = 0
S1=$(serials_of "$OUT" | sed -n 1p)
S2=$(serials_of "$OUT" | sed -n 2p)
U0=$(lease_until "$S1")
cli alice extend "$S1" --duration 60
check "extend --duration 60 of a 1 h lease exits 0 (rc $RC)" test "$RC" = 0
check "... and leaves its end where it was (not 60 s from now)" test "$(lease_until "$S1")" = "$U0"
check "... its reply says the lease's real end" jtest "$OUT" "j['leases'] == [{'serial': '$S1', 'until': $U0}]"
hcli alice extend "$S1" --duration 60
check "the human output says it was kept, with its end" grep -q "^$S1 kept: it already ends .*later than asked" <<<"$OUT"
T=$(now_ms)
cli alice extend "$S1" --duration 7200
U1=$(lease_until "$S1")
check "extend --duration 7200 moves the end to about now + 2 h" test $((U1 - T - 7200000)) -ge -1000 -a $((U1 - T - 7200000)) -le 5000
hcli alice extend "$S1" --duration 999999
check "extend --duration 999999 exits 0 (rc $RC)" test "$RC" = 0
check "... says the new end with a zone and how far it is" grep -qE "^$S1 extended until [0-9-]+ [0-9:]+ [A-Z+0-9-]+ \(in 24 h" <<<"$OUT"
check "... and warns that it was capped at the farm's maximum" grep -q "capped at 86400 s" <<<"$ERR"
T=$(now_ms)
cli alice extend "$S1" --duration 60 --set
U2=$(lease_until "$S1")
check "extend --duration 60 --set shortens it to about now + 60 s" test $((U2 - T - 60000)) -ge -1000 -a $((U2 - T - 60000)) -le 5000

# ---- end / extend of what is not yours: named, exit 1 ----
cli bob reserve --amount 1
B1=$(serials_of "$OUT")
hcli alice extend "$S1" NOSUCHSERIAL "$B1"
check "extend of an unknown and someone else's serial exits 1 (rc $RC)" test "$RC" = 1
check "... still extends alice's own" grep -q "^$S1 extended until" <<<"$OUT"
check "... names the unknown serial" grep -q "NOSUCHSERIAL: not extended: unknown serial" <<<"$ERR"
check "... names bob's board as bob's" grep -q "$B1: not extended: reserved by another client (bob)" <<<"$ERR"
cli alice end "$B1"
check "end of bob's board exits 1 (rc $RC)" test "$RC" = 1
check "... with the envelope and the reason per serial" jtest "$OUT" \
    "j['ok'] is False and j['exit'] == 1 and j['serials'] == [] and j['missing'][0]['serial'] == '$B1' and 'bob' in j['missing'][0]['reason']"
check "... and bob still holds it" status_has "[l['client'] for l in j['leases'] if l['serial'] == '$B1'] == ['bob']"
cli alice end "$S2"
check "alice ends S2 (rc $RC)" test "$RC" = 0
hcli alice end "$S2"
check "ending it again exits 1 (rc $RC)" test "$RC" = 1
check "... saying it is not alice's any more (already ended)" grep -q "$S2: not ended: not reserved by alice (already ended" <<<"$ERR"
cli alice end-all
cli bob end-all

# ---- a plain watch never extends ----
# carol watches her events first; then a 5 s lease is warned at once (it is
# shorter than the warning lead time). The holder's own client would extend it;
# a viewer must not, so it ends on time.
wait_until 60 available_is 4 || true
timeout 40 "$CLI_BIN" --broker "$FARM_BROKER" --name carol watch >"$RUN/watch.out" 2>"$RUN/watch.err" </dev/null &
WATCH=$!
E2E_BG+=("$WATCH")
wait_until 10 grep -q "watching events" "$RUN/watch.err" || true
sleep 0.5 # its subscription is acknowledged after the connect
cli carol --no-extend reserve --amount 1 --duration 5
C1=$(serials_of "$OUT")
check "carol reserves a board for 5 s (rc $RC)" test "$RC" = 0
check "carol's watch hears 'reservation ending soon'" wait_until 10 grep -q "reservation ending soon" "$RUN/watch.out"
lease_gone() { status_has "not [l for l in j['leases'] if l['serial'] == '$C1']"; }
check "the 5 s lease still ends on time: the watch did not extend it" wait_until 30 lease_gone
check "the watch saw it end" wait_until 10 grep -q '"reservation end"' "$RUN/watch.out"
kill "$WATCH" 2>/dev/null || true

# ---- reserve: too few boards, unknown kind ----
t0=$(date +%s%N)
timeout 30 "$CLI_BIN" --broker "$FARM_BROKER" --name dave reserve --amount 100 --wait 3 >"$RUN/r.out" 2>"$RUN/r.err" </dev/null &
RPID=$!
sleep 1
check "reserve --amount 100 --wait 3 warns at once that the farm has only 4 boards (still waiting)" bash -c \
    "grep -q 'the farm has only 4 board(s) of kind pulsecount now; 100 asked: waiting' '$RUN/r.err' && kill -0 $RPID"
RC=0
wait "$RPID" || RC=$?
check "... then exits 4 when the wait runs out (rc $RC, $((($(date +%s%N) - t0) / 1000000)) ms)" test "$RC" = 4
hcli dave reserve --amount 1 --kind bogus
check "reserve --kind bogus exits 1 (rc $RC)" test "$RC" = 1
check "... saying the kinds the farm offers" grep -q 'unknown kind "bogus"; the farm offers: pulsecount, variance' <<<"$ERR"

# ---- status and who ----
cli erin reserve --amount 1 --duration 1800
E1=$(serials_of "$OUT")
cli frank reserve --amount 2
hcli erin status
check "status marks erin's board with * and shows its end with a zone, relative" \
    grep -qE "^\* $E1 .* erin +[0-9-]+ [0-9:]+ [A-Z+0-9-]+ \(in (29|30) min\)" <<<"$OUT"
check "status does not mark frank's boards" bash -c '! grep -E "^\*.* frank " <<<"$1"' _ "$OUT"
check "status counts: 4 boards, 3 leased, 1 yours" grep -q "^4 board(s), 3 leased, 1 yours$" <<<"$OUT"
hcli erin who
check "who lists erin (marked) with 1 board and frank with 2" bash -c \
    'grep -qE "^\* erin +1 +pulsecount" <<<"$1" && grep -qE "^  frank +2 +pulsecount" <<<"$1"' _ "$OUT"
cli erin who
check "who --json lists both holders" jtest "$OUT" "sorted(h['client'] for h in j['holders']) == ['erin', 'frank']"

# ---- no --broker: the running embedded farm's env file ----
ENVF=$RUN/farm.env
{
    echo "# icefarm-up-pid=$$"
    printf 'export ICEFARM_BROKER=%q\n' "$FARM_BROKER"
} >"$ENVF"
chmod 600 "$ENVF"
RC=0
OUT=$(env -u ICEFARM_BROKER ICEFARM_ENV_FILE="$ENVF" timeout 20 "$CLI_BIN" --name erin --json status 2>>"$RUN/cli.log") || RC=$?
check "with no --broker and no ICEFARM_BROKER, the live farm's env file is used (rc $RC)" jtest "$OUT" "len(j['boards']) == 4"
sed -i "s/icefarm-up-pid=.*/icefarm-up-pid=999999999/" "$ENVF"
RC=0
ERR=$(env -u ICEFARM_BROKER ICEFARM_ENV_FILE="$ENVF" timeout 20 "$CLI_BIN" --name erin --timeout 2 status 2>&1 >/dev/null) || RC=$?
check "a dead farm's env file is ignored (falls back to 127.0.0.1:1883, rc $RC)" grep -q "127.0.0.1:1883" <<<"$ERR"

# ---- a broker that is not an icefarm farm ----
PORT=$(farm_free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$RUN/bare.conf"
mosquitto -c "$RUN/bare.conf" >"$RUN/bare.log" 2>&1 &
E2E_BG+=($!)
farm_wait_port "$PORT"
t0=$(date +%s%N)
RC=0
ERR=$(timeout 20 "$CLI_BIN" --broker "mqtt://127.0.0.1:$PORT" --name erin --timeout 2 status 2>&1 >/dev/null) || RC=$?
TOOK=$((($(date +%s%N) - t0) / 1000000))
check "status against a plain mosquitto exits 3 (rc $RC) within its --timeout 2 (${TOOK} ms)" \
    test "$RC" = 3 -a "$TOOK" -lt 5000
check "... saying it is not an icefarm farm" grep -q "is not an icefarm farm (it has no retained icefarm/ctl/state" <<<"$ERR"
# watch asks nothing of control by itself: it must still name the wrong broker
# (it watched Debian's mosquitto in silence), and go on watching.
RC=0
timeout --preserve-status -s INT 5 "$CLI_BIN" --broker "mqtt://127.0.0.1:$PORT" --name erin --timeout 2 watch \
    >/dev/null 2>"$RUN/watch-bare.err" </dev/null || RC=$?
check "watch against a plain mosquitto says it is not an icefarm farm (within its --timeout 2)" \
    grep -q "is not an icefarm farm (it has no retained icefarm/ctl/state" "$RUN/watch-bare.err"
check "... and watches on until Ctrl-C (rc $RC)" bash -c "test $RC = 0 && grep -q 'watching anyway' '$RUN/watch-bare.err'"

# ---- sub: topics and payloads as JSON lines (mosquitto_sub -v habits) ----
RC=0
timeout --preserve-status -s INT 3 "$CLI_BIN" --broker "$FARM_BROKER" sub 'icefarm/+/state' icefarm/farm/available >"$RUN/sub.out" \
    2>>"$RUN/cli.log" </dev/null || RC=$?
check "sub runs until Ctrl-C and exits 0 (rc $RC)" test "$RC" = 0
check "sub printed each board's retained state as a decoded JSON line" "$PY" - "$RUN/sub.out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
boards = {l["topic"] for l in lines if l["topic"].endswith("/state") and l["retained"] and isinstance(l["payload"], dict)
          and l["payload"].get("serial") and l["payload"].get("state")}
avail = [l for l in lines if l["topic"] == "icefarm/farm/available" and "kinds" in l["payload"]]
sys.exit(0 if len(boards) >= 4 and avail else 1)
PY
