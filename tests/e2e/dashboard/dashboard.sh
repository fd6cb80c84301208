#!/usr/bin/env bash
# The dashboard end to end (heavy: Chromium; budget 240 s, about 60 s here):
# icefarm-http serves the bundled page, Debian's headless Chromium driven by
# playwright-core (npm, cached outside the clone) opens it against a real farm,
# and dashboard.mjs checks that it lists every board, that a reservation, its
# end and a killed worker show within 2 s, that the counts of evaluations
# arrive, that a frozen worker (SIGSTOP) shows as HUNG with why its boards are
# not granted within 2 x heartbeat + 1.25 s and online again after SIGCONT, that
# no request of the page fails (favicon), and (secured farm, DASH_SECURE=1) that
# the dashboard account is read-only, an operator's reboot works and a plain
# client's is refused, and that a Chromium which does not trust the farm's CA
# (no --ignore-certificate-errors) says so after a few failed attempts.
# Screenshots of each state: $FARM_BIN/tests/e2e/dashboard/screens-{anon,secure}/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SECURE=${DASH_SECURE:-0}
[[ $SECURE == 1 ]] && export FARM_SECURE=1
# shellcheck source=../../lib/e2e.sh
source "$HERE/../../lib/e2e.sh"

for tool in node npm /usr/bin/chromium; do
    command -v "$tool" >/dev/null || { echo "# skipped: $tool is missing (./icefarm test installs chromium; node/npm come with NodeSource)"; exit 77; }
done
[[ -s $FARM_BIN/ctl/http/dashboard/dashboard.js ]] || { not_ok "the dashboard is bundled in $FARM_BIN/ctl/http/dashboard"; exit 1; }

# playwright-core from npm, into the build tree; npm's cache outside the clone.
NPM_DIR=$FARM_BIN/tests/e2e/dashboard/npm
CACHE=${ICEFARM_NPM_CACHE:-/var/cache/icefarm/npm}
mkdir -p "$CACHE" 2>/dev/null || CACHE=$HOME/.cache/icefarm/npm
mkdir -p "$NPM_DIR"
if ! cmp -s "$HERE/package-lock.json" "$NPM_DIR/package-lock.json" || [[ ! -d $NPM_DIR/node_modules/playwright-core ]]; then
    cp "$HERE/package.json" "$HERE/package-lock.json" "$NPM_DIR/"
    (cd "$NPM_DIR" && npm ci --cache "$CACHE" --prefer-offline --ignore-scripts --no-audit --no-fund --loglevel=error) >"$RUN/npm.log" 2>&1 ||
        { not_ok "npm ci for playwright-core (see $RUN/npm.log)"; cat "$RUN/npm.log"; exit 1; }
fi

SHOTS=$FARM_BIN/tests/e2e/dashboard/screens-$([[ $SECURE == 1 ]] && echo secure || echo anon)
rm -rf "$SHOTS"
mkdir -p "$SHOTS"

KEEPALIVE=5 # the worker's (the least it takes): its Will comes at most 7.5 s after it dies
e2e_farm_start 4 --keepalive "$KEEPALIVE"
farm_start_http
WRK_PID=$(e2e_pid_of wrk | tail -n 1)
BROKER_PID=$(e2e_pid_of broker | tail -n 1)

export PW=$NPM_DIR/node_modules/playwright-core/index.mjs HTTP=$FARM_HTTP SHOTS CLI=$CLI_BIN BROKER=$FARM_BROKER \
    CA=${FARM_CA:-} SECRETS=${FARM_SECRETS:-} SECURE WRK_PID KEEPALIVE BOARDS=4 \
    BROKER_PID BROKER_CONF=$RUN/mosquitto.conf BROKER_LOG=$RUN/mosquitto.log \
    BITSTREAMS="$BITS/clk_2khz.bin $BITS/clk_8khz.bin $BITS/clk_32khz.bin"
node "$HERE/dashboard.mjs" >"$RUN/browser.log" 2>&1 || true
while IFS= read -r line; do
    case $line in
    "ok - "*) ok "${line#ok - }" ;;
    "not ok - "*) not_ok "${line#not ok - }" ;;
    "# WORKER_KILLED") E2E_KILLED[$WRK_PID]=1 ;;
    "# BROKER_PID "*) # the restarted broker: stopped with the farm at the end
        E2E_KILLED[$BROKER_PID]=1
        FARM_PIDS=("${FARM_PIDS[0]}" "${line#\# BROKER_PID }" "${FARM_PIDS[@]:1}")
        E2E_ROLE[${line#\# BROKER_PID }]=broker ;;
    *) echo "$line" ;;
    esac
done <"$RUN/browser.log"
[[ -z ${E2E_KILLED[$WRK_PID]:-} ]] || wait "$WRK_PID" 2>/dev/null || true
grep -q "^ok - the page lists every simulated board" "$RUN/browser.log" || not_ok "the browser session reached the board list"
