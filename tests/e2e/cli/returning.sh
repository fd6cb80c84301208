#!/usr/bin/env bash
# Boards returning after a release (re-flashing the default firmware, then
# self-testing) are coming back, not unavailable: right after an evaluate,
# `reserve` without --wait still answers at once (exit 4) but says how many are
# returning and how to wait for them; `evaluate` and `flash`, which reserve for
# themselves, wait for them within --timeout and say so; a --timeout shorter
# than their return gives up with the reason. The simulated flash takes 2 s
# here, so "right after" is a window of seconds, not a race.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 2000

# run SECONDS ARGS...: icefarm-cli on the farm's broker with a hard bound; sets RC, OUT, ERR, TOOK (ms).
run() {
    local bound=$1
    shift
    cli_run "$bound" --broker "$FARM_BROKER" "$@"
}
returning_now() { status_has "sum(b['state'] in ('flashing', 'testing') for b in j['boards']) == 2 and not j['leases']"; }

run 60 --name first evaluate --boards 2 "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin"
check "an evaluate on both boards exits 0 (rc $RC)" test "$RC" = 0

# reserve right after: at once, exit 4, and the boards named as returning.
run 20 --name second reserve --amount 2
check "reserve --amount 2 right after exits 4 (rc $RC) at once (${TOOK} ms)" test "$RC" = 4 -a "$TOOK" -lt 1500
check "... saying that 2 boards are returning to the farm" grep -q "2 board(s) of kind pulsecount are returning to the farm" <<<"$ERR"
check "... and how to wait for them (--wait)" grep -q "reserve --wait 40 waits for them" <<<"$ERR"
check "(the boards were indeed on their way back then)" returning_now
wait_until 60 available_is 2 || true
run 20 --name second reserve --amount 2
check "once they are back the same reserve works (rc $RC)" test "$RC" = 0
run 20 --name second end-all

# evaluate right after an evaluate: waits for the returning boards within --timeout.
wait_until 60 available_is 2 || true
run 60 --name first evaluate --boards 2 "$BITS/clk_1khz.bin"
check "evaluate (rc $RC)" test "$RC" = 0
run 60 --name second --timeout 30 evaluate --boards 2 "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin"
check "evaluate --boards 2 right after exits 0 (rc $RC): it waited for the returning boards (${TOOK} ms)" test "$RC" = 0
check "... saying what it waited for and for how long" \
    grep -q "are returning to the farm (re-flashing after a release): waiting up to 30 s for 2 board(s)" <<<"$ERR"
check "... and both results are there" grep -q "2 of 2 bitstream(s) evaluated on 2 board(s)" <<<"$OUT"
run 60 --name second --timeout 30 evaluate "$BITS/clk_1khz.bin"
check "evaluate without --boards right after exits 0 too (rc $RC)" test "$RC" = 0

# A --timeout shorter than the return: exit 4, with the reason.
wait_until 60 available_is 2 || true
run 60 --name first evaluate --boards 2 "$BITS/clk_1khz.bin"
run 30 --name second --timeout 1 --json evaluate --boards 2 "$BITS/clk_1khz.bin"
check "evaluate --timeout 1 right after exits 4 (rc $RC) in about 1 s (${TOOK} ms)" \
    test "$RC" = 4 -a "$TOOK" -ge 900 -a "$TOOK" -lt 5000
check "... --json says the returning boards did not come back within 1 s" jtest "$OUT" \
    "j['ok'] is False and j['exit'] == 4 and 'did not come back within 1 s' in j['error']"

# flash, which reserves for itself when given no serials, waits the same way.
wait_until 60 available_is 2 || true
"$PY" "$E2E_DIR/uf2.py" "$RUN/fw.uf2"
run 60 --name first evaluate --boards 2 "$BITS/clk_1khz.bin"
run 60 --name third --timeout 30 --json flash --boards 1 "$RUN/fw.uf2"
check "flash --boards 1 right after an evaluate exits 0 (rc $RC): it waited for a returning board" test "$RC" = 0
check "... and flashed it" jtest "$OUT" "j['ok'] and j['summary']['flashed'] == 1"
run 20 --name third end-all
