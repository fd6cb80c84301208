#!/usr/bin/env bash
# Leases survive a kill -9 of icefarm-ctl: restarted on the same --data directory
# it lists the same leases (holder, lease id, deadline), still refuses them to
# others, and the holder can still end them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50

# env_poll SECONDS COMMAND...: wait_until with 3 s CLI timeouts.
env_poll() { CLI_TIMEOUT=3 wait_until "$@"; }

HOLDER=durable
cli "$HOLDER" reserve --amount 2
check "reserve --amount 2 exits 0 (got $RC)" test "$RC" = 0
SERIALS=$(serials_of "$OUT")
cli e2e-observer status
LEASES_BEFORE=$(jpy "$OUT" "sorted([l['serial'], l['client'], l['lease'], l['until']] for l in j['leases'])")
check "status lists both leases for $HOLDER" jtest "$OUT" \
    "sorted(l['serial'] for l in j['leases'] if l['client'] == '$HOLDER') == sorted('''$SERIALS'''.split())"

CTL=$(e2e_pid_of ctl)
check "icefarm-ctl is the second farm process" test "$CTL" = "${FARM_PIDS[1]}"
e2e_kill9 "$CTL"
ok "kill -9 icefarm-ctl (pid $CTL)"

# Nobody answers requests now: the CLI says "unreachable" (exit 3), it does not hang.
RC=0
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 2 --name e2e-observer --json available >"$RUN/down.json" 2>>"$RUN/cli.log" || RC=$?
check "available while control is down exits 3 (got $RC)" test "$RC" = 3

e2e_start_ctl
ok "restart icefarm-ctl on the same --data directory"
# A request sent before the new control subscribed is lost: poll with short timeouts.
check "control answers again and sees the worker's boards" \
    env_poll 60 status_has "len(j['boards']) == 4"
cli e2e-observer status
check "status after the restart lists the same leases (serial, holder, lease id, deadline)" \
    jtest "$OUT" "sorted([l['serial'], l['client'], l['lease'], l['until']] for l in j['leases']) == $LEASES_BEFORE"
check "the leased boards are not available" jtest "$OUT" \
    "not any(b['available'] for b in j['boards'] if b['serial'] in '''$SERIALS'''.split())"
check "the 2 other boards become available" wait_until 60 available_is 2
cli other reserve --amount 3
check "another client cannot get 3 boards (exit 4, got $RC)" test "$RC" = 4
cli other reserve "$(sed -n 1p <<<"$SERIALS")"
check "another client cannot reserve a leased serial (got $RC)" bash -c "[[ $RC != 0 ]]"
cli "$HOLDER" extend
check "the holder can extend both leases (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$1 == \"\$2\" ]]" _ "$(serials_of "$OUT")" "$SERIALS"
mapfile -t SERIAL_LIST <<<"$SERIALS"
cli "$HOLDER" end "${SERIAL_LIST[@]}"
check "the holder can end both leases (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$1 == \"\$2\" ]]" _ "$(serials_of "$OUT")" "$SERIALS"
check "status shows no leases" status_has "j['leases'] == []"
check "all 4 boards become available again" wait_until 60 available_is 4

# And once more with a lease granted by the restarted control: a second kill -9
# right after the grant (it was durable before the reply) must not lose it.
cli "$HOLDER" reserve --amount 1
check "reserve --amount 1 on the restarted control exits 0 (got $RC)" test "$RC" = 0
S=$(serials_of "$OUT")
e2e_kill9 "$(e2e_pid_of ctl)"
e2e_start_ctl
ok "kill -9 and restart icefarm-ctl again"
check "the lease granted just before the kill is still there" env_poll 60 status_has \
    "[l['client'] for l in j['leases'] if l['serial'] == '$S'] == ['$HOLDER']"
cli "$HOLDER" end-all
check "the holder ends it (got $RC)" bash -c "[[ $RC == 0 ]] && [[ \$1 == $S ]]" _ "$(serials_of "$OUT")"
check "status shows no leases at the end" status_has "j['leases'] == []"
check "all 4 boards are available at the end" wait_until 60 available_is 4
