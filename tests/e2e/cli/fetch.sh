#!/usr/bin/env bash
# icefarm-cli evaluate and flash take http:// and https:// URLs as well as files,
# through the fetcher icefarm-dhs uses (icefarm/fetch.h), against a real local
# HTTP server (file_server.py): a download that works gives the same results
# as the file and reports its SHA-256; 404, too large (by Content-Length and
# while streaming), a refused redirect and a bad file exit 2 at once; a slow
# server is given up after --timeout and a server error exits 1. flash --json
# prints the usual envelope, and --flash-timeout bounds the wait for "flashed"
# and says what it waited for. Every call runs under `timeout` with its exit
# code asserted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"


# The files the server offers: two bitstreams, a UF2 the simulated worker
# accepts (RP2350, 8 blocks), and a file that is no bitstream.
mkdir -p "$RUN/www"
cp "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin" "$RUN/www/"
"$PY" "$E2E_DIR/uf2.py" "$RUN/www/fw.uf2"
head -c 104090 /dev/zero >"$RUN/www/zero.bin"
printf 'not a uf2' >"$RUN/www/odd.uf2"
"$PY" "$(dirname "${BASH_SOURCE[0]}")/file_server.py" "$RUN/www" "$RUN/http.port" 2>>"$RUN/http.log" &
E2E_BG+=($!)
for _ in $(seq 1 100); do [[ -s $RUN/http.port ]] && break; sleep 0.05; done
HTTP=http://127.0.0.1:$(cat "$RUN/http.port")
SHA1=$(sha256sum "$BITS/clk_1khz.bin" | cut -d' ' -f1)
SHA2=$(sha256sum "$BITS/clk_2khz.bin" | cut -d' ' -f1)
SHAFW=$(sha256sum "$RUN/www/fw.uf2" | cut -d' ' -f1)

# ---- before any farm: a reference that cannot be used is refused at once ----
NOBROKER=mqtt://127.0.0.1:1
cli_run 10 --broker $NOBROKER evaluate "$HTTP/missing"
check "evaluate of a URL that is 404 exits 2 (rc $RC) at once (${TOOK} ms)" test "$RC" = 2 -a "$TOOK" -lt 3000
check "... saying 'cannot fetch URL: HTTP 404'" grep -q "cannot fetch $HTTP/missing: HTTP 404" <<<"$ERR"
cli_run 10 --broker $NOBROKER evaluate "$HTTP/big"
check "a URL whose Content-Length is over 104,090 bytes exits 2 (rc $RC)" test "$RC" = 2
check "... saying it is larger than 104090 bytes" grep -q "$HTTP/big is larger than 104090 bytes" <<<"$ERR"
cli_run 10 --broker $NOBROKER evaluate "$HTTP/stream"
check "a URL that streams without end exits 2 (rc $RC) at once (${TOOK} ms): the cap while reading" \
    test "$RC" = 2 -a "$TOOK" -lt 3000
cli_run 15 --broker $NOBROKER --timeout 2 evaluate "$HTTP/slow/clk_1khz.bin"
check "a slow server exits 1 (rc $RC) after --timeout 2 (${TOOK} ms), not before, not much after" \
    test "$RC" = 1 -a "$TOOK" -ge 1900 -a "$TOOK" -lt 5000
check "... saying it was not fetched within 2000 ms" grep -q "not fetched within 2000 ms" <<<"$ERR"
cli_run 10 --broker $NOBROKER evaluate "$HTTP/redirect-ftp"
check "a redirect to ftp:// is refused (exit 2, rc $RC)" bash -c '[[ $1 == 2 ]] && grep -q "other than http or https" <<<"$2"' _ "$RC" "$ERR"
cli_run 10 --broker $NOBROKER evaluate "$HTTP/redirect-file"
check "a redirect to file:// is refused (exit 2, rc $RC)" test "$RC" = 2
cli_run 10 --broker $NOBROKER evaluate "$HTTP/error"
check "a server error exits 1 (rc $RC), saying HTTP 500" bash -c '[[ $1 == 1 ]] && grep -q "HTTP 500" <<<"$2"' _ "$RC" "$ERR"
cli_run 10 --broker $NOBROKER evaluate "$HTTP/zero.bin"
check "a downloaded file is checked like a local one: zeros are no bitstream (exit 2, rc $RC)" \
    bash -c '[[ $1 == 2 ]] && grep -q "iCE40 preamble ff 00" <<<"$2"' _ "$RC" "$ERR"
cli_run 10 --broker $NOBROKER --json evaluate "$BITS/clk_1khz.bin" "$HTTP/missing"
check "--json: the error in the envelope (exit 2, rc $RC)" jtest "$OUT" "j['ok'] is False and j['exit'] == 2 and 'HTTP 404' in j['error']"
cli_run 10 --broker $NOBROKER evaluate "$RUN/no-such.bin"
check "a missing local file still exits 2 (rc $RC), saying so" \
    bash -c '[[ $1 == 2 ]] && grep -q "cannot read .*no-such.bin: No such file or directory" <<<"$2"' _ "$RC" "$ERR"
cli_run 10 --broker $NOBROKER flash "$HTTP/missing"
check "flash of a URL that is 404 exits 2 (rc $RC)" test "$RC" = 2
cli_run 10 --broker $NOBROKER flash "$HTTP/odd.uf2"
check "flash of a downloaded non-UF2 exits 2 (rc $RC)" bash -c '[[ $1 == 2 ]] && grep -q "is not a UF2 image" <<<"$2"' _ "$RC" "$ERR"
cli_run 20 --broker $NOBROKER flash "$HTTP/stream"
check "flash of a URL past 8 MiB is refused while reading (exit 2, rc $RC)" \
    bash -c '[[ $1 == 2 ]] && grep -q "larger than 8388608 bytes" <<<"$2"' _ "$RC" "$ERR"

# ---- with a farm ----
e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 300
"$PY" "$E2E_DIR/mqtt_tool.py" pulses "$BITS/clk_1khz.bin" "$BITS/clk_2khz.bin" >"$RUN/expected.txt"
P1=$(awk 'NR == 1 {print $2}' "$RUN/expected.txt")
P2=$(awk 'NR == 2 {print $2}' "$RUN/expected.txt")
F=(--broker "$FARM_BROKER" --timeout 20)

cli_run 60 "${F[@]}" --name fetcher --json evaluate "$HTTP/clk_1khz.bin" "$HTTP/redirect/clk_2khz.bin" "$BITS/clk_1khz.bin"
check "evaluate of two URLs (one redirected) and a file exits 0 (rc $RC)" test "$RC" = 0
check "... the right counts, in argument order" jtest "$OUT" \
    "[r['pulses'] for r in j['results']] == [$P1, $P2, $P1] and j['ok'] and j['summary']['done'] == 3"
check "... each result with the SHA-256 of what was sent" jtest "$OUT" \
    "[r['sha256'] for r in j['results']] == ['$SHA1', '$SHA2', '$SHA1']"
wait_until 60 available_is 2 || true
cli_run 60 "${F[@]}" --name fetcher evaluate "$HTTP/clk_2khz.bin"
check "without --json: exit 0 (rc $RC), the row on stdout" bash -c '[[ $1 == 0 ]] && grep -q "^$2 .* $3 pulses" <<<"$4"' _ "$RC" "$HTTP/clk_2khz.bin" "$P2" "$OUT"
check "... and the download with its size and SHA-256 on stderr" grep -q "fetched $HTTP/clk_2khz.bin: 104090 bytes, sha256 $SHA2" <<<"$ERR"

# flash by URL, with the envelope.
wait_until 60 available_is 2 || true
cli flasher reserve --amount 1
S=$(serials_of "$OUT")
wait_until 30 status_has "any(b['serial'] == '$S' and b['state'] == 'reserved' for b in j['boards'])" || true
cli_run 60 "${F[@]}" --name flasher --json flash "$HTTP/fw.uf2" "$S"
check "flash of a URL exits 0 (rc $RC)" test "$RC" = 0
check "--json is the envelope: ok, exit, the image with its SHA-256, one result, a summary" jtest "$OUT" \
    "j['ok'] is True and j['exit'] == 0 and j['image'] == {'file': '$HTTP/fw.uf2', 'bytes': 4096, 'sha256': '$SHAFW'} and j['results'] == [{'serial': '$S', 'ok': True, 'result': 'flashed'}] and j['summary']['flashed'] == 1 and j['summary']['failed'] == 0"

# --flash-timeout: a flash slower than it is reported as such, with the board's state.
sim_fault "$S" slow_flash 1
wait_until 10 grep -q "serial=$S sim fault slow_flash x1: armed" "$RUN/wrk.log" || true
cli_run 30 "${F[@]}" --name flasher --json flash --flash-timeout 1 "$RUN/www/fw.uf2" "$S"
check "flash --flash-timeout 1 on a slow flash exits 1 (rc $RC) after about 1 s (${TOOK} ms)" \
    test "$RC" = 1 -a "$TOOK" -ge 900 -a "$TOOK" -lt 8000
check "... the envelope says it timed out" jtest "$OUT" \
    "j['ok'] is False and j['exit'] == 1 and j['results'][0]['result'] == 'timed out' and 'not flashed' in j['error']"
check "... and stderr what it waited for" grep -q "did not report flashed within --flash-timeout 1 s ($S " <<<"$ERR"
wait_until 30 status_has "any(b['serial'] == '$S' and b['state'] == 'reserved' for b in j['boards'])" || true
cli flasher end-all
