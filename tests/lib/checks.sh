# shellcheck shell=bash
# The check vocabulary of the shell tests: one "ok - ..."/"not ok - ..." line per
# check, counted in PASS and FAIL for the closing "N passed, M failed" line.
PASS=0
FAIL=0

ok() {
    echo "ok - $*"
    PASS=$((PASS + 1))
}

not_ok() {
    echo "not ok - $*"
    FAIL=$((FAIL + 1))
}

# check DESCRIPTION COMMAND...: one check line from a command's status.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

# wait_until SECONDS COMMAND...: polls until COMMAND succeeds; 1 after SECONDS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while true; do
        if "$@"; then return 0; fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
