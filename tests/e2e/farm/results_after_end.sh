#!/usr/bin/env bash
# Results measured before the end of a lease reach its holder (issue 16 item 3,
# PROTOCOL.md 15.2), by `end` and by expiry: the holder queues 40 bitstreams
# with a flush policy that holds every result until the queue drains, ends the
# lease (or lets it expire) while some are measured and the rest queued, and
# must then receive the measured ones (tagged with the ended lease, each value
# right) and `released`. In the secured farm (FARM_SECURE=1,
# results_after_end_secure.sh) the ACL plugin must deliver them after the lease
# is gone, to the holder only: bob, watching icefarm/+/event, gets none.
# Budget: about 30 s per farm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 1 --sim-window-ms 250 --sim-flash-ms 50
HOLDER=holder
AUTH=()
if [[ -n ${FARM_SECURE:-} ]]; then
    HOLDER=alice
    AUTH=(--user alice --password "${FARM_USERS[0]#* }" --cafile "$FARM_CA")
    export MQTT_USER=alice MQTT_PASSWORD="${FARM_USERS[0]#* }" MQTT_CAFILE=$FARM_CA
fi
as_holder() { RC=0; OUT=$("$CLI_BIN" --broker "$FARM_BROKER" "${AUTH[@]}" --name "$HOLDER" --json "$@" 2>>"$RUN/cli.log") || RC=$?; }
available_is() { as_holder available && jtest "$OUT" "j.get('amount') == $1"; }
board_reserved() { as_holder status && jtest "$OUT" "[b['state'] for b in j['boards']] == ['reserved']"; }
ARGS='{"flush_at_bitstreams_remaining": 0, "flush_interval_seconds": 0}'

one_case() {
    local how=$1 seed=$2 ev cev exp lease s
    as_holder reserve --amount 1 --args "$ARGS"
    check "[$how] the holder reserves the board (got $RC)" test "$RC" = 0
    s=$(serials_of "$OUT")
    as_holder status
    lease=$(jpy "$OUT" "j['leases'][0]['lease']")
    ev=$RUN/ev-$how.jsonl cev=$RUN/cev-$how.jsonl
    check "[$how] the holder watches the board's events" e2e_watch "$ev" "icefarm/$s/event"
    check "[$how] ... and its client events" e2e_watch "$cev" "icefarm/client/$HOLDER/event"
    if [[ -n ${FARM_SECURE:-} ]]; then
        MQTT_USER=bob MQTT_PASSWORD="${FARM_USERS[1]#* }" e2e_watch "$RUN/bob-$how.jsonl" "icefarm/+/event"
    fi
    check "[$how] the board is reserved" wait_until 30 board_reserved
    exp=$(MQTT_NAME=$HOLDER "$PY" "$E2E_DIR/mqtt_tool.py" evaluate "$FARM_BROKER" "$s" "b-$how" 40 "$seed")
    ok "[$how] 40 bitstreams queued on $s (lease $lease)"
    if [[ $how == expiry ]]; then
        as_holder extend "$s" --duration 5 --set
        check "[$how] the lease now ends in 5 s (extend, got $RC)" test "$RC" = 0
    fi
    sleep 2.5
    check "[$how] no result yet: the flush policy holds them until the queue drains" \
        bash -c "! grep -q '\"results\"' '$ev'"
    if [[ $how == end ]]; then
        as_holder end "$s"
        check "[$how] the holder ends the lease with results in flight (got $RC)" test "$RC" = 0
    else
        check "[$how] the lease expires with results in flight" e2e_wait_event "$cev" 30 "reservation end" "$s"
    fi
    check "[$how] the holder still receives the measured results" e2e_wait_event "$ev" 10 results "$s"
    check "[$how] ... then 'released'" e2e_wait_event "$ev" 10 released "$s"
    check "[$how] every result is tagged with lease $lease, right, and there are some (not all 40)" "$PY" - "$ev" "$exp" "$lease" <<'PY'
import json, sys
exp, lease = json.loads(sys.argv[2]), int(sys.argv[3])
got = {}
for line in open(sys.argv[1]):
    p = json.loads(line)["payload"]
    if isinstance(p, dict) and p.get("event") in ("results", "released"):
        assert p.get("lease") == lease, p
    if isinstance(p, dict) and p.get("event") == "results":
        for i, v in p["results"]:
            assert i not in got, "twice: " + i
            got[i] = v
print("# %d results after the end: %s" % (len(got), sorted(got, key=int)), file=sys.stderr)
assert 1 <= len(got) < 40, len(got)
assert all(exp[i] == v for i, v in got.items()), got
PY
    if [[ -n ${FARM_SECURE:-} ]]; then
        check "[$how] bob, watching icefarm/+/event, got none of them" bash -c "! grep -q '\"results\"' '$RUN/bob-$how.jsonl'"
    fi
    check "[$how] the board is free again" wait_until 30 available_is 1
}

one_case end 1
one_case expiry 2
