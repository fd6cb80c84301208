#!/usr/bin/env bash
# The USB/IP broker tunnel in the secured farm (TLS, passwords, the ACL plugin):
# the holder imports through it, anybody else gets nothing, the lease's end ends
# the session (tunnel_secure.py does the checks).
set -euo pipefail
FARM_BIN=$(cd "${FARM_BIN:?set FARM_BIN to the build directory}" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$HERE/../../../broker/embedded/farm.sh"
source "$HERE/../../lib/checks.sh" # ok, not_ok, check

RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e-tunnel.XXXXXX")
chmod 755 "$RUN" # the secured broker drops root before it reads its files under here
cleanup() {
    local rc=$?
    set +e
    farm_stop
    if ((rc != 0)); then
        for f in "$RUN"/farm/*.log; do
            echo "======== ${f#"$RUN"/} (last 80 lines) ========"
            tail -n 80 "$f"
        done
        echo "(run directory: $RUN)"
        exit 1
    fi
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$RUN"
}
trap cleanup EXIT
farm_sanitized_broker "$RUN"

FARM_SECURE=1 farm_start "$RUN/farm" 1 --sim-window-ms 50 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$(farm_free_port)" --usbip-host 127.0.0.1
farm_wait_ready 1 60
/usr/bin/python3 "$HERE/tunnel_secure.py" "$FARM_BROKER" "$FARM_CA" "$FARM_SECRETS" "$FARM_BIN/cli/icefarm-cli"
check "the worker ended the tunnel session with the lease" \
    grep -q "connection from tunnel .* closed: export ended" "$RUN/farm/wrk.log"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
