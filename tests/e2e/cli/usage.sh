#!/usr/bin/env bash
# icefarm-cli's answers before any farm is involved: usage errors exit 2 with one
# line (never the whole help), per-command --help gives options, defaults and an
# example, the bitstream check refuses what is not an iCE40 image, and an
# unreachable broker fails at once with the precise cause (exit 3). Every call
# runs under `timeout`: a hang is a failure, and each has a wall-time bound.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

lines() { grep -c . <<<"$1" || true; }

# usage_error DESCRIPTION PATTERN ARGS...: exit 2, one line on stderr matching PATTERN, at once.
usage_error() {
    local desc=$1 pat=$2
    shift 2
    cli_run 5 --broker mqtt://127.0.0.1:1 "$@"
    check "$desc: exit 2 (got $RC)" test "$RC" = 2
    check "$desc: one line on stderr, saying \"$pat\"" bash -c '[[ $(grep -c . <<<"$1") == 1 ]] && grep -q -- "$2" <<<"$1"' _ "$ERR" "$pat"
    check "$desc: nothing on stdout" test -z "$OUT"
}

usage_error "reserve --amount 0" "amount must be a whole number from 1" reserve --amount 0
usage_error "a flag no command has" "unknown option --frobnicate" status --frobnicate
usage_error "another command's flag" "reserve has no option --window" reserve --amount 1 --window 3
usage_error "a flag without its value" "needs a value" status --timeout
usage_error "end-all extra-arg" "end-all takes no arguments" end-all extra-arg
usage_error "end without serials" "usage: icefarm-cli end" end
usage_error "an unknown command" "unknown command" frobnicate
usage_error "extend --set without --duration" "--set needs --duration" extend --set
cli_run 5 --broker mqtt://127.0.0.1:1 --name 'a/b' status
check "a bad client name exits 2 (got $RC), at once" test "$RC" = 2
check "... saying so" grep -q 'invalid client name "a/b": the name contains' <<<"$ERR"
usage_error "an empty --name (not the default name in silence)" "--name needs a non-empty name" --name '' status
usage_error "a --name of 128 bytes (not cut to 127 in silence)" "client name too long (128 bytes; at most 127)" \
    --name "$(printf 'n%.0s' {1..128})" status
cli_run 5 --broker 'http://example.org' status
check "a bad broker URL exits 2 (got $RC)" test "$RC" = 2
check "... saying so" grep -q 'bad broker address' <<<"$ERR"
cli_run 5 --broker mqtts://127.0.0.1:1 --cafile "$RUN/no-such-ca.crt" status
check "a missing CA file exits 2 (got $RC)" test "$RC" = 2
check "... naming the file and the cause" grep -q "no-such-ca.crt: No such file" <<<"$ERR"

# Per-command help: options with defaults and units, and an example; stdout, exit 0.
for c in status who available devices reserve extend end end-all reboot evaluate flash watch sub; do
    cli_run 5 "$c" --help
    check "$c --help exits 0 with its usage and an example" bash -c \
        '[[ $1 == 0 ]] && grep -q "^Usage: icefarm-cli $2" <<<"$3" && grep -q "^Example:" <<<"$3"' _ "$RC" "$c" "$OUT"
done
cli_run 5 reserve --help
check "reserve --help gives --wait in seconds with its default" grep -q -- '--wait SECONDS .*default 0' <<<"$OUT"
check "reserve --help gives --kind's default" grep -q -- '--kind KIND .*default pulsecount' <<<"$OUT"
cli_run 5 evaluate --help
check "evaluate --help lists --ndjson, --no-check and --result-timeout" bash -c \
    'grep -q -- --ndjson <<<"$1" && grep -q -- --no-check <<<"$1" && grep -q -- "--result-timeout SECONDS" <<<"$1"' _ "$OUT"

# The bitstream check: the size, then the iCE40 framing (ff 00, comment, 00 ff, 7e aa 99 7e).
head -c 104090 /dev/zero >"$RUN/zero.bin"
head -c 104090 /dev/urandom >"$RUN/random.bin"
printf '\xff\x00' >"$RUN/nocomment.bin"
head -c 104088 /dev/zero >>"$RUN/nocomment.bin"
{ printf '\xff\x00Lattice iCE40 \x00\xff\x7e\xaa\x99\x7e'; head -c 104068 "$BITS/clk_1khz.bin"; } >"$RUN/comment.bin"
head -c 1000 "$BITS/clk_1khz.bin" >"$RUN/short.bin"
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate "$RUN/zero.bin"
check "104,090 zero bytes are refused (exit 2, got $RC)" test "$RC" = 2
check "... because they lack the preamble ff 00, and --no-check is named" \
    bash -c 'grep -q "iCE40 preamble ff 00" <<<"$1" && grep -q -- --no-check <<<"$1"' _ "$ERR"
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate "$BITS/clk_1khz.bin" "$RUN/random.bin"
check "random bytes are refused before anything is sent (exit 2, got $RC)" test "$RC" = 2
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate "$RUN/nocomment.bin"
check "a comment that never ends is refused (got $RC)" bash -c '[[ $1 == 2 ]] && grep -q "never ends with 00 ff" <<<"$2"' _ "$RC" "$ERR"
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate "$RUN/short.bin"
check "a short file is refused with its size (got $RC)" bash -c '[[ $1 == 2 ]] && grep -q "is 1000 bytes" <<<"$2"' _ "$RC" "$ERR"
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate "$RUN/comment.bin"
check "a preamble with a comment passes the check (then the broker is unreachable: exit 3, got $RC)" test "$RC" = 3
cli_run 5 --broker mqtt://127.0.0.1:1 evaluate --no-check "$RUN/zero.bin"
check "--no-check sends any 104,090 bytes (unreachable broker: exit 3, got $RC)" test "$RC" = 3

# Unreachable: fail at once with the cause, no retrying for --timeout, no timestamps.
PORT=$(farm_free_port)
cli_run 10 --broker "mqtt://127.0.0.1:$PORT" --timeout 8 status
check "a refused connection exits 3 (got $RC)" test "$RC" = 3
check "... at once (under 2 s of an 8 s --timeout: ${TOOK} ms)" test "$TOOK" -lt 2000
check "... saying 'Connection refused'" grep -q "127.0.0.1:$PORT: Connection refused" <<<"$ERR"
check "... in one line without a timestamp" bash -c '[[ $(grep -c . <<<"$1") == 1 ]] && ! grep -qE "[0-9]{4}-[0-9]{2}-[0-9]{2}T" <<<"$1"' _ "$ERR"
# An IPv6 literal in brackets, as URLs write it (it was taken for a host name).
cli_run 10 --broker "mqtt://[::1]:$PORT" --timeout 8 status
check "mqtt://[::1]:PORT is an address, not a name to resolve (rc $RC)" \
    bash -c '[[ $1 == 3 ]] && ! grep -q "cannot resolve" <<<"$2"' _ "$RC" "$ERR"
cli_run 5 --broker 'mqtt://[::1:1883' status
check "an unclosed [ is a bad broker URL: exit 2 (got $RC)" test "$RC" = 2
cli_run 10 --broker mqtt://no-such-host.invalid:1883 --timeout 8 --json status
check "an unknown host exits 3 (got $RC)" test "$RC" = 3
check "... at once (${TOOK} ms)" test "$TOOK" -lt 5000
check "... saying it cannot resolve the name" grep -q "cannot resolve no-such-host.invalid" <<<"$ERR"
check "... and --json says it in the envelope" jtest "$OUT" "j['ok'] is False and j['exit'] == 3 and 'resolve' in j['error']"

# A broker that accepts the connection and never answers: waited for exactly
# --timeout, and on a terminal the wait is said after a second.
PORT=$(farm_free_port)
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); time.sleep(60)' "$PORT" &
E2E_BG+=($!)
farm_wait_port "$PORT"
t0=$(date +%s%N)
RC=0
timeout 20 script -qec "$CLI_BIN --broker mqtt://127.0.0.1:$PORT --timeout 3 status" /dev/null >"$RUN/tty.out" 2>&1 \
    </dev/null || RC=$?
TOOK=$((($(date +%s%N) - t0) / 1000000))
tr -d '\r' <"$RUN/tty.out" >"$RUN/tty.txt"
cat "$RUN/tty.txt" >>"$RUN/cli.log"
check "a silent broker: exit 3 (rc $RC) after its --timeout 3 (${TOOK} ms), not before, not much after" \
    test "$RC" = 3 -a "$TOOK" -ge 2900 -a "$TOOK" -lt 6000
check "... saying on the terminal what it waits for" grep -q "waiting for the broker at mqtt://127.0.0.1:$PORT" "$RUN/tty.txt"
check "... and why it gave up" grep -q "no broker answered at 127.0.0.1:$PORT within 3000 ms" "$RUN/tty.txt"
