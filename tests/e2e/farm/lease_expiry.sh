#!/usr/bin/env bash
# Leases expire on their own: with --lease 3 --warn-before 2 the holder hears
# "reservation ending soon" and then "reservation end" for its board on
# icefarm/client/<name>/event, and the board goes back to the pool. An extended
# lease is announced again, with its new deadline.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

FARM_CTL_ARGS="--lease 3 --warn-before 2"
e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 50

HOLDER=expiring
EV=$RUN/events.jsonl
check "a raw MQTT watcher is subscribed to icefarm/client/$HOLDER/event" \
    e2e_watch "$EV" "icefarm/client/$HOLDER/event"

cli "$HOLDER" --no-extend reserve --amount 1
check "reserve --amount 1 exits 0 (got $RC)" test "$RC" = 0
S=$(serials_of "$OUT")
UNTIL=$(jpy "$OUT" "j['serials'][0]['until']")
# (Or it has already ended: a 3 s lease on a very slow machine.)
lease_shown() {
    status_has "[l['client'] for l in j['leases'] if l['serial'] == '$S'] == ['$HOLDER']" ||
        e2e_wait_event "$EV" 0 "reservation end" "$S"
}
check "status shows the lease" lease_shown

check "the holder hears 'reservation ending soon' for $S" e2e_wait_event "$EV" 60 "reservation ending soon" "$S"
check "the holder hears 'reservation end' for $S" e2e_wait_event "$EV" 60 "reservation end" "$S"
check "'ending soon' came before 'end', each exactly once, and nothing else" "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
names = [e["event"] for e in ev if e.get("serial") == sys.argv[2]]
sys.exit(0 if names == ["reservation ending soon", "reservation end"] else "events: %r" % ev)' "$EV" "$S"
check "'reservation end' says why: expired" "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
end = [e for e in ev if e["event"] == "reservation end"]
sys.exit(0 if end and end[0].get("reason") == "expired" else "events: %r" % ev)' "$EV"
check "'ending soon' carries the lease deadline" "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
soon = [e for e in ev if e["event"] == "reservation ending soon"]
sys.exit(0 if soon and soon[0].get("until") == int(sys.argv[2]) else "events: %r" % ev)' "$EV" "$UNTIL"
check "status shows no lease for $S after the end" status_has "not [l for l in j['leases'] if l['serial'] == '$S']"
board_available() { cli e2e-observer devices && jtest "$OUT" "'$1' in j['serials']"; }
check "$S becomes available again" wait_until 60 board_available "$S"
cli "$HOLDER" end "$S"
check "ending an expired lease releases nothing" bash -c "[[ -z \$1 ]]" _ "$(serials_of "$OUT")"

# Extending re-arms the timers: a long lease extended to a short one is warned
# with its new deadline and ends on its own after it (and not before).
wait_until 60 available_is 2 || true
cli "$HOLDER" --no-extend reserve "$S" --duration 600
check "reserving $S again for 600 s exits 0 (got $RC)" test "$RC" = 0
cli "$HOLDER" extend "$S" --duration 4 --set
check "extend --duration 4 exits 0 and returns $S (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$1 == $S ]]" _ "$(serials_of "$OUT")"
NEW_UNTIL=$(jpy "$OUT" "j['until']")
ended_count() {
    "$PY" -c 'import json, sys
sys.exit(0 if sum(json.loads(l)["payload"]["event"] == "reservation end" for l in open(sys.argv[1])) >= int(sys.argv[2]) else 1)' "$EV" "$1"
}
deadline_shown() {
    status_has "[l['until'] for l in j['leases'] if l['serial'] == '$S'] == [$NEW_UNTIL]" || ended_count 2
}
check "status shows the new deadline" deadline_shown
warned_again() {
    "$PY" -c 'import json, sys
ev = [json.loads(l)["payload"] for l in open(sys.argv[1])]
sys.exit(0 if any(e["event"] == "reservation ending soon" and e.get("until") == int(sys.argv[2]) for e in ev) else 1)' "$EV" "$NEW_UNTIL"
}
check "the extended lease is warned with its new deadline" wait_until 60 warned_again
check "the extended lease ends on its own too" wait_until 60 ended_count 2
check "no 'reservation end' came before the extended deadline" "$PY" -c 'import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
ends = [m["t"] for m in ev if m["payload"]["event"] == "reservation end"]
# Wall clock of the watcher vs the deadline control set: 0.5 s of slack for clocks read in different processes.
sys.exit(0 if ends[-1] * 1000 >= int(sys.argv[2]) - 500 else "ended at %.3f, deadline %s" % (ends[-1], sys.argv[2]))' "$EV" "$NEW_UNTIL"
check "status shows no leases at the end" status_has "j['leases'] == []"
check "both boards become available again" wait_until 60 available_is 2
