#!/usr/bin/env bash
# A farm process of `./icefarm up` dies (here: kill -9 of its broker, as a crash or
# the OOM killer would): up stops the farm and tells the user what happened, which
# process died and how, with its last log lines, and the logs it names are still
# there to read (it once said "logs in DIR" and removed DIR on its way out).
#   FARM_BIN=BUILD_DIR broker_death.sh
set -euo pipefail
# shellcheck source=frontdoor.sh
source "$(dirname "$0")/frontdoor.sh"

fd_start "$RUN/up.out" up --boards 1
if fd_wait_line 600 '^Ctrl-C stops everything'; then
    ok "./icefarm up --boards 1 comes up"
else
    not_ok "./icefarm up --boards 1 comes up"
    exit 1
fi
LOGS=$(fd_field logs)
broker=$(pgrep -s "$FD_PID" -x mosquitto || true)
check "its broker runs in up's session (pid ${broker:-none})" test -n "$broker"
[[ -n $broker ]] || exit 1

kill -KILL "$broker"
if fd_wait_exit 20; then
    ok "up stops when its broker dies (rc=$FD_RC)"
else
    not_ok "up stops when its broker dies"
fi
check "  ... with status 1" test "${FD_RC:-}" = 1
check "  ... naming the broker and how it died" \
    grep -q "^icefarm: the broker (mosquitto) (pid $broker) was killed by SIGKILL" "$FD_OUT"
check "  ... with the last lines of its log" grep -q "^icefarm: the last lines of $LOGS/mosquitto.log:" "$FD_OUT"
check "  ... the logs it names are still there ($LOGS)" \
    bash -c "grep -q '^icefarm: logs kept in $LOGS ' '$FD_OUT' && test -s '$LOGS/mosquitto.log' && test -s '$LOGS/ctl.log'"
check "  ... and nothing but logs (no passwords, keys or lease store)" \
    bash -c "test -z \"\$(find '$LOGS' -mindepth 1 ! -name '*.log')\""
check "  ... no process of the farm is left" session_empty "$FD_PID"
if ((FAIL)); then sed 's/^/# up: /' "$FD_OUT" | tail -n 20; fi

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
