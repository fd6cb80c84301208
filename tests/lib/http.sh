# shellcheck shell=bash
# The HTTP end-to-end tests' helpers (tests/e2e/http/*.sh, tests/e2e/http_auth): curl
# against icefarm-http, the checks on its answers, starting and stopping it, and the
# exit trap. Sourced after broker/embedded/farm.sh and tests/lib/checks.sh, with RUN
# set to the test's private directory. Every request and its answer go to
# $RUN/curl.log.
#
# Variables: URL (the shim, http://HOST:PORT), AUTH (curl options sent with every
# request: (-u alice:PW), (-H "Authorization: Bearer T") or ()), HTTP_PID (the shim
# start_http started, or one the script took from FARM_PIDS), BG (background pids
# killed at exit). http sets CODE, BODY and HDRS.

# shellcheck disable=SC2034 # read by checks.sh's jtest
JSON_LOG=$RUN/curl.log
AUTH=()
BG=()
HTTP_PID=""

# urlenc TEXT: TEXT percent-encoded for a query string.
urlenc() { "${PY:-python3}" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# http METHOD PATH [JSON [more curl options]]: one request; sets CODE, BODY and HDRS
# (the response headers). METHOD is an HTTP method (JSON, if any, is the body, as
# application/json), or one of the request styles of the documented API: get (GET
# with a JSON body), post (POST with a JSON body), query (GET ?json=JSON), postq
# (POST ?json=JSON, no body), bare (GET, JSON ignored).
http() {
    local method=$1 path=$2 json=${3-} shown=${3-}
    shift $(($# < 3 ? $# : 3))
    local args=(-s -o "$RUN/body" -D "$RUN/hdrs" -w '%{http_code}' --max-time 60 "${AUTH[@]}" "$@")
    case $method in
    query) args+=(-G --data-urlencode "json=$json") json="" ;;
    postq) args+=(-X POST) path="$path?json=$(urlenc "$json")" json="" ;;
    bare) json="" ;;
    *) args+=(-X "${method^^}") ;;
    esac
    [[ -z $json ]] || args+=(-H 'Content-Type: application/json' --data-binary "$json")
    CODE=$(curl "${args[@]}" "$URL$path" 2>>"$RUN/curl.log") || CODE=000
    BODY=$(cat "$RUN/body" 2>/dev/null || true)
    HDRS=""
    [[ ! -e $RUN/hdrs ]] || IFS= read -r -d '' HDRS <"$RUN/hdrs" || true # no fork per request
    HDRS=${HDRS//$'\r'/}
    printf '+ %s %s %s (%s)\n  -> %s %s\n' "$method" "$path" "$shown" "${AUTH[*]:0:2}" "$CODE" "$BODY" >>"$RUN/curl.log"
}

# expect STATUS DESC [EXPR]: the last answer had STATUS (and its JSON satisfies EXPR).
expect() {
    local want=$1 desc=$2 expr=${3:-True}
    if [[ $CODE == "$want" ]] && jtest "$BODY" "$expr"; then
        ok "$desc"
    else
        not_ok "$desc (got HTTP $CODE: ${BODY:0:300})"
    fi
}

# expect_error STATUS DESC WORD: an error answer {"error": "..."} mentioning WORD.
expect_error() {
    expect "$1" "$2" "set(j) == {'error'} and isinstance(j['error'], str) and $(js 'a[0]' "$3") in j['error']"
}

# available_is N: GET /available says N boards.
available_is() {
    http GET /available
    [[ $CODE == 200 ]] && jtest "$BODY" "j == {'amount': $1}"
}

# sse_has EVENT SERIAL: $SSE_OUT (a saved /events stream) has an "event: EVENT"
# block whose data is that event for SERIAL.
sse_has() {
    "${PY:-python3}" - "$SSE_OUT" "$1" "$2" <<'EOF'
import json, sys
for block in open(sys.argv[1]).read().split("\n\n"):
    lines = block.split("\n")
    ev = [l[7:] for l in lines if l.startswith("event: ")]
    data = [l[6:] for l in lines if l.startswith("data: ")]
    if ev == [sys.argv[2]] and data:
        d = json.loads(data[0])
        if d.get("serial") == sys.argv[3] and d.get("event") == sys.argv[2]:
            sys.exit(0)
sys.exit(1)
EOF
}

# start_http LOG [icefarm-http options...]: icefarm-http on a free loopback port of the
# running farm (FARM_BROKER); sets HTTP_PID, HTTP_PORT and URL; fails if it does not
# listen within 20 s.
start_http() {
    local log=$1
    shift
    HTTP_PORT=$(farm_free_port)
    "$FARM_BIN/ctl/http/icefarm-http" --broker "$FARM_BROKER" --listen "127.0.0.1:$HTTP_PORT" "$@" >>"$log" 2>&1 &
    HTTP_PID=$!
    URL=http://127.0.0.1:$HTTP_PORT
    farm_wait_port "$HTTP_PORT" 200
}

# stop_http WHAT: stops HTTP_PID (SIGTERM) and checks it exits 0: under ASan that also
# means no leak and no sanitizer report.
stop_http() {
    [[ -n $HTTP_PID ]] || return 0
    kill -TERM "$HTTP_PID" 2>/dev/null || true
    local st=0
    wait "$HTTP_PID" 2>/dev/null || st=$?
    HTTP_PID=""
    if ((st == 0)); then ok "$1: icefarm-http exits 0 on SIGTERM (no leak or sanitizer report)"; else
        not_ok "$1: icefarm-http exits 0 on SIGTERM (status $st; see its log)"
    fi
}

# The exit trap (trap http_cleanup EXIT): background pids, the shim, the farm; the
# closing count; on a failure the run's logs; the run directory unless E2E_KEEP.
http_cleanup() {
    local rc=$? p f
    set +e
    if ((rc == 77)); then # a skip (its reason said): nothing ran that needs judging
        farm_stop
        rm -rf "$RUN"
        exit 77
    fi
    for p in "${BG[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    ((rc == 0)) || not_ok "the test script stopped early with status $rc"
    stop_http "at exit"
    farm_stop
    echo "$PASS passed, $FAIL failed"
    if ((FAIL > 0)); then
        for f in "$RUN"/*.log "$RUN"/*/*.log "$RUN"/*.out; do
            [[ -e $f ]] || continue
            echo "======== ${f#"$RUN"/} (last 150 lines) ========"
            tail -n 150 "$f"
        done
        echo "(run directory: $RUN)"
        exit 1
    fi
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$RUN"
    exit 0
}
