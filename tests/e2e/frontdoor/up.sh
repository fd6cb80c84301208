#!/usr/bin/env bash
# `./icefarm up` as README.md gives it, from the checkout: it comes up and stays up,
# a client session through the addresses it printed works (the lines it tells you
# to paste into another terminal, the CLI and curl), `./icefarm env` gives the same
# farm to a second shell, and SIGINT stops it with no process left behind.
#   FARM_BIN=BUILD_DIR up.sh [--secure]
set -euo pipefail
# shellcheck source=frontdoor.sh
source "$(dirname "$0")/frontdoor.sh"
SECURE=${1:-}
BOARDS=3
args=(up --boards "$BOARDS")
if [[ $SECURE == --secure ]]; then
    # --port too: the broker on the port asked for.
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    args+=(--secure --port "$PORT")
fi
echo "# ./icefarm ${args[*]}"

fd_start "$RUN/up.out" "${args[@]}"
if fd_wait_line 600 '^Ctrl-C stops everything'; then
    ok "./icefarm ${args[*]} comes up and says how to stop it"
else
    not_ok "./icefarm ${args[*]} comes up and says how to stop it"
    exit 1
fi
BROKER=$(fd_field broker)
HTTP=$(fd_field http)
LOGS=$(fd_field logs)
check "it prints the broker's address ($BROKER)" test -n "$BROKER"
check "it prints the HTTP API's address ($HTTP)" test -n "$HTTP"
cli=("$BUILD/cli/icefarm-cli" --broker "$BROKER" --timeout 20)
curl_auth=()
if [[ -n $SECURE ]]; then
    check "the broker listens on the --port asked for" test "$BROKER" = "mqtts://localhost:$PORT"
    CA=$(fd_field ca)
    ALICE_PW=$(sed -n 's/^user: alice //p' "$FD_OUT")
    check "it prints the CA file ($CA)" test -s "$CA"
    check "it prints alice's password" test -n "$ALICE_PW"
    # as a careful user would: the password in a 0600 file, not on the command line
    (umask 077 && printf '%s\n' "$ALICE_PW" >"$RUN/alice.pw")
    cli+=(--cafile "$CA" --user alice --password-file "$RUN/alice.pw")
    curl_auth=(-u "alice:$ALICE_PW")
fi

# The farm answers through the printed addresses: CLI and curl.
wait_until 60 bash -c "$(printf '%q ' "${cli[@]}") --json available 2>/dev/null | grep -q '\"amount\": *$BOARDS'" || true
out=$("${cli[@]}" --json available 2>&1 || true)
check "icefarm-cli available through the printed broker: $BOARDS boards" amount_is "$out" "$BOARDS"
out=$("${cli[@]}" --json evaluate --boards 2 "$BITS/clk_1khz.bin" "$BITS/clk_8khz.bin" 2>"$RUN/eval.err" || true)
check "icefarm-cli evaluate through the printed broker: the right count per bitstream" \
    counts_right "$out" "$BITS/clk_1khz.bin" "$BITS/clk_8khz.bin"
out=$(curl -sS --max-time 20 "${curl_auth[@]}" "$HTTP/available" 2>&1 || true)
check "curl $HTTP/available answers with the farm's boards" python3 -c 'import json,sys; sys.exit(0 if "amount" in json.loads(sys.argv[1]) else 1)' "$out"
if [[ -n $SECURE ]]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$HTTP/available" || true)
    check "curl without a login is refused ($code)" test "$code" = 401
    check "icefarm-cli without a password is refused" \
        bash -c "! '$BUILD/cli/icefarm-cli' --broker '$BROKER' --cafile '$CA' --timeout 5 status >/dev/null 2>&1"
fi

# Kind usbip, as README.md documents it: a board's console through `serial`, no root.
USBIP=$(fd_field usbip)
check "it prints the worker's USB/IP address (${USBIP%% *})" test -n "$USBIP"
out=$("${cli[@]}" --json reserve --kind usbip --amount 1 --args '{"image": "pulsecount"}' 2>&1 || true)
userial=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["serials"][0]["serial"])' "$out" 2>/dev/null || true)
check "reserve --kind usbip through the printed broker gets a board" test -n "$userial"
timeout -s INT 15 "${cli[@]}" serial "$userial" </dev/null >"$RUN/serial.out" 2>"$RUN/serial.err" || true
check "icefarm-cli serial prints the board firmware's greeting" grep -q "Waiting for bitstream transfer" "$RUN/serial.out"
check "  ... and says on stderr that the console is up" grep -q "serial $userial: up:" "$RUN/serial.err"
check "  ... with no timestamped log line among what it says" bash -c "! grep -q '^[0-9]\{4\}-[0-9][0-9]-' '$RUN/serial.err'"
"${cli[@]}" end "$userial" >/dev/null 2>&1 || true

# all_available: every board is back (boards an evaluate used re-flash for a moment).
all_available() {
    local out
    out=$("${cli[@]}" --json available 2>/dev/null || true)
    amount_is "$out" "$BOARDS"
}
wait_until 60 all_available || true

# What it tells you to paste into another terminal, pasted as it is (from elsewhere).
sed -n '/In another terminal:/,/^Ctrl-C/p' "$FD_OUT" | sed -e '1d' -e '$d' -e 's/(status page: .*)$//' >"$RUN/paste.sh"
echo "# pasting:" && sed 's/^/#   /' "$RUN/paste.sh"
rc=0
(cd / && env -u ICEFARM_BROKER bash -e "$RUN/paste.sh") >"$RUN/paste.out" 2>&1 || rc=$?
check "the pasted lines run without an error (rc=$rc)" test "$rc" = 0
check "  ... and evaluate printed a count per bitstream" \
    test "$(grep -c ' pulses$' "$RUN/paste.out")" -eq "$(find "$BITS" -name '*.bin' | wc -l)"
check "  ... and curl printed the available boards" grep -q '"amount"' "$RUN/paste.out"

# README.md's block for a second terminal, line by line as written, from the checkout
# (build/ is this test's build directory; the streaming commands run for 3 s).
# (A person types slower than this: wait for the boards the pasted evaluate used.)
if [[ -z $SECURE ]]; then
    wait_until 60 all_available || true
    awk '/^`\.\/icefarm up \[--boards N\]/ { f = 1 } f && /^```sh/ { g = 1; next } g && /^```/ { exit } g' "$ROOT/README.md" |
        sed -E -e 's/ {2,}# .*$//' -e "s|^build/|$BUILD/|" >"$RUN/readme.lines"
    {
        echo "set -eo pipefail"
        while IFS= read -r line; do
            printf 'echo %q\n' "## $line"
            if [[ $line == *" watch"* || $line == *"curl -sN"* ]]; then
                printf 'rc=0; timeout 3 %s || rc=$?; [[ $rc == 124 ]]\n' "$line"
            else
                printf '%s\n' "$line"
            fi
        done <"$RUN/readme.lines"
    } >"$RUN/readme.sh"
    rc=0
    (cd "$ROOT" && env -u ICEFARM_BROKER bash "$RUN/readme.sh") >"$RUN/readme.out" 2>&1 || rc=$?
    check "README.md's $(wc -l <"$RUN/readme.lines") commands for a second terminal run as written (rc=$rc)" test "$rc" = 0
    ((rc == 0)) || tail -n 5 "$RUN/readme.out" | sed 's/^/#   /'
    curl_reserve() { awk '/^## curl -s -d/ { f = 1; next } /^## / { f = 0 } f' "$RUN/readme.out" | grep -q '"serial"'; }
    check "  ... the README's curl reserve got a board" curl_reserve
    # Free what the README's reserve commands hold, for the checks below.
    "${cli[@]}" --json end-all >/dev/null 2>&1 || true
    "$BUILD/cli/icefarm-cli" --broker "$BROKER" --name me --json end-all >/dev/null 2>&1 || true
fi

# ./icefarm env: the same farm for a second shell, in a private file.
envf=$ICEFARM_ENV_FILE
check "the env file is private (mode 600)" test "$(stat -c %a "$envf" 2>/dev/null)" = 600
env_out=$(cd "$ROOT" && { ./icefarm env 2>&1 || true; })
check "./icefarm env exports the printed broker" grep -qx "export ICEFARM_BROKER=$BROKER" <<<"$env_out"
if [[ -n $SECURE ]]; then
    check "./icefarm env gives alice's credentials" grep -qx "export ICEFARM_PASSWORD=$ALICE_PW" <<<"$env_out"
fi
# (the boards the pasted evaluate used come back once they have rebooted)
env_available() {
    out=$(env -i PATH="$PATH" bash -c 'eval "$1"; "$2/cli/icefarm-cli" --timeout 20 --json available' _ "$env_out" "$BUILD" 2>&1 || true)
    amount_is "$out" "$BOARDS"
}
check "eval \"\$(./icefarm env)\" then icefarm-cli with no flags reaches the farm" wait_until 60 env_available

# Stays up: still there, still serving, a few seconds later.
sleep 3
check "./icefarm up is still running" kill -0 "$FD_PID"
out=$("${cli[@]}" --json available 2>&1 || true)
check "the farm still answers" amount_is "$out" "$BOARDS"

# SIGINT stops everything, and nothing is left.
kill -INT "$FD_PID"
if fd_wait_exit 60; then
    ok "SIGINT stops ./icefarm up (rc=$FD_RC)"
else
    not_ok "SIGINT stops ./icefarm up"
fi
check "  ... with status 130" test "${FD_RC:-}" = 130
check "  ... no process of it is left" session_empty "$FD_PID"
check "  ... the broker's port is closed" port_closed "$BROKER"
check "  ... the HTTP port is closed" port_closed "$HTTP"
check "  ... its run directory is gone ($LOGS)" test ! -e "$LOGS"
check "  ... the env file is gone" test ! -e "$envf"
env_rc=0
(cd "$ROOT" && ./icefarm env >/dev/null 2>&1) || env_rc=$?
check "./icefarm env with no farm running exits 1" test "$env_rc" = 1

if [[ -z $SECURE ]]; then
    # --port on a port that is taken: a usage error at once, nothing started.
    python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)' >"$RUN/busy.port" &
    busy=$!
    wait_until 10 test -s "$RUN/busy.port" || true
    fd_start "$RUN/busy.out" up --port "$(cat "$RUN/busy.port")"
    fd_wait_exit 60 || true
    kill "$busy" 2>/dev/null || true
    wait "$busy" 2>/dev/null || true
    check "up --port on a busy port exits 2 and says so (rc=${FD_RC:-})" \
        bash -c "test '${FD_RC:-}' = 2 && grep -q 'is in use' '$FD_OUT'"
    check "  ... leaving nothing behind" session_empty "$FD_PID"
fi

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
