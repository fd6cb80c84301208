#!/usr/bin/env bash
# Stopping the worker while it is writing firmware to a board must be as clean as
# any other stop: exit status 0, and under ASan no leak (a pending write's
# bookkeeping must not be lost with the transport's callbacks). A slow_flash
# fault on a slow simulated flash keeps the board in the middle of its write for
# ~20 s, so the stop lands there on any machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 1 --sim-window-ms 50 --sim-flash-ms 2000 --flash-timeout-ms 120000

cli e2e-observer devices
S=$(jpy "$OUT" "j['serials'][0]")
check "inject 'slow_flash' on $S" sim_fault "$S" slow_flash
check "the worker armed it" wait_until 30 grep -q "serial=$S sim fault slow_flash x1: armed" "$RUN/wrk.log"
cli stopper reserve "$S"
check "reserve $S exits 0 (got $RC)" test "$RC" = 0
preparing() { status_has "[b['state'] for b in j['boards'] if b['serial'] == '$S'] == ['preparing']"; }
check "$S is preparing (flashing the pulse-count firmware)" wait_until 30 preparing
# The touch and the re-enumeration as BOOTSEL take a fraction of a second; the
# write then takes 10 x 2 s. Stopping earlier would only make this test miss.
sleep 3
check "$S is still preparing: the stop lands mid-write" preparing
WRK=$(e2e_pid_of wrk)
RC=0
e2e_stop "$WRK" || RC=$?
check "the worker stopped mid-write exits 0 on SIGTERM (status $RC; see wrk.log for a sanitizer report)" test "$RC" = 0
check "status shows the worker offline" wait_until 30 status_has "[w['online'] for w in j['workers']] == [False]"
