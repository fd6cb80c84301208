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

# relay: counts the "ok - ..."/"not ok - ..." lines on stdin (a Python checker's) as
# this script's checks; other lines are echoed. Feed it with
#   relay < <(CHECKER || echo "not ok - CHECKER ended with status $?")
# so that a checker that crashes or hangs (under timeout) is a failure, not silence.
relay() {
    local line
    while IFS= read -r line; do
        case $line in
        "ok - "*) ok "${line#ok - }" ;;
        "not ok - "*) not_ok "${line#not ok - }" ;;
        *) echo "$line" ;;
        esac
    done
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

# ---- JSON in checks (python3, or $PY when the script chose one) ----
# A parse error or a failing expression is written to $JSON_LOG (default
# $RUN/json.log), next to what the script was doing.

# js EXPR ARGS...: prints json.dumps(EXPR) with a = ARGS (to build JSON safely).
js() {
    "${PY:-python3}" -c 'import json, sys
a = sys.argv[2:]
print(json.dumps(eval(sys.argv[1])))' "$@"
}

# jtest JSON EXPR: succeeds if EXPR is true with j = the parsed JSON (false on bad JSON).
jtest() {
    "${PY:-python3}" -c 'import json, sys
try:
    j = json.loads(sys.argv[1])
    sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
except Exception as e:
    sys.stderr.write("jtest: %s\n" % e)
    sys.exit(1)' "$1" "$2" 2>>"${JSON_LOG:-$RUN/json.log}"
}

# jpy JSON EXPR: prints EXPR evaluated with j = the parsed JSON (lists, dicts,
# booleans and None as JSON, anything else as str() prints it).
jpy() {
    "${PY:-python3}" -c 'import json, sys
j = json.loads(sys.argv[1])
r = eval("(" + sys.argv[2] + ")")
print(json.dumps(r) if isinstance(r, (dict, list, bool)) or r is None else r)' "$1" "$2"
}
