#!/usr/bin/env bash
# Only the holder's board commands run, in the anonymous farm too (PROTOCOL.md 8.1):
# icefarm-cli refuses a board someone else holds at once (403-style, rc 1), and
# the worker itself refuses a command that names another client or none, telling
# the sender (an `error` naming it) without disturbing the holder's run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 50

cli alice reserve --amount 1
check "alice reserves a board (rc $RC)" test "$RC" = 0
S=$(serials_of "$OUT")
wait_until 30 status_has "any(b['serial'] == '$S' and b['state'] == 'reserved' for b in j['boards'])" || true

# The CLI checks the boards it is given before sending anything.
t0=$SECONDS
rc=0
timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 10 --name bob evaluate --serials "$S" "$BITS/clk_1khz.bin" \
    >"$RUN/bob.out" 2>"$RUN/bob.err" || rc=$?
check "evaluate --serials on alice's board as bob exits 1 (got $rc)" test "$rc" = 1
check "... at once (within 5 s, took $((SECONDS - t0)) s)" test $((SECONDS - t0)) -le 5
check "... saying it is reserved by another client" grep -q "reserved by another client" "$RUN/bob.err"
rc=0
timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 10 --name bob evaluate --serials NOSUCHBOARD "$BITS/clk_1khz.bin" \
    >"$RUN/bob.out" 2>"$RUN/bob.err" || rc=$?
check "evaluate --serials of an unknown serial exits 1 at once (got $rc)" test "$rc" = 1
check "... saying it is unknown" grep -qi "unknown serial" "$RUN/bob.err"

head -c 512 /dev/zero >"$RUN/dummy.uf2"
t0=$SECONDS
rc=0
timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 10 --name bob flash "$RUN/dummy.uf2" "$S" \
    >"$RUN/bob.out" 2>"$RUN/bob.err" || rc=$?
check "flash FILE on alice's board as bob exits 1 at once (rc $rc, $((SECONDS - t0)) s)" \
    test "$rc" = 1 -a $((SECONDS - t0)) -le 5
check "... saying it is reserved by another client" grep -q "reserved by another client" "$RUN/bob.err"

# Past the CLI: raw MQTT 5 commands straight to the board's topic.
e2e_watch "$RUN/events.jsonl" "icefarm/$S/event"
"$PY" - "$FARM_BROKER" "$S" <<'PY'
import sys, time, msgpack
from urllib.parse import urlparse
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
u = urlparse(sys.argv[1]); serial = sys.argv[2]
c = mqtt.Client(client_id="holder-test", protocol=mqtt.MQTTv5)
c.connect(u.hostname, u.port)
c.loop_start()
bits = bytes(104090)
def send(batch, name):
    p = Properties(PacketTypes.PUBLISH)
    if name:
        p.UserProperty = ("icefarm-client", name)
    cmd = {"v": 1, "op": "evaluate", "batch_id": batch, "files": {"0": bits}}
    c.publish("icefarm/%s/cmd" % serial, msgpack.packb(cmd, use_bin_type=True), qos=1, properties=p).wait_for_publish()
send("by-bob", "bob")
send("by-nobody", None)
time.sleep(0.3)
c.loop_stop(); c.disconnect()
PY
refused_to() { # refused_to BATCH CLIENT REASON_PART
    "$PY" - "$RUN/events.jsonl" "$@" <<'PY'
import json, sys
path, batch, client, part = sys.argv[1:5]
for line in open(path):
    p = json.loads(line).get("payload") or {}
    if p.get("event") == "error" and p.get("batch_id") == batch and p.get("client", "") == client and part in p.get("reason", ""):
        sys.exit(0)
sys.exit(1)
PY
}
check "the worker refuses bob's command on alice's board, naming bob" \
    wait_until 20 refused_to by-bob bob "reserved by another client, not by bob"
check "the worker refuses a command without icefarm-client" \
    wait_until 20 refused_to by-nobody "" "carries no icefarm-client"
check "neither produced a result" bash -c "! grep -q '\"results\"' '$RUN/events.jsonl'"

# alice's own run is not disturbed by either refusal.
cli alice evaluate --serials "$S" "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin"
check "alice evaluates on her board afterwards (rc $RC)" test "$RC" = 0
