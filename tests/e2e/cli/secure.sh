#!/usr/bin/env bash
# icefarm-cli against the secured farm (TLS, passwords, the ACL plugin): TLS
# failures fail at once with the precise cause (no retrying for --timeout), a
# password file works and a loose one is refused, another user's board is
# refused at once, and the embedded farm's env file carries the credentials.
set -euo pipefail
export FARM_SECURE=1
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_launch 2 --sim-window-ms 50 --sim-flash-ms 50
ALICE_PW=${FARM_USERS[0]#* }
BOB_PW=${FARM_USERS[1]#* }
(umask 077 && printf '%s\n' "$ALICE_PW" >"$RUN/alice.pw" && printf '%s\n' "$BOB_PW" >"$RUN/bob.pw")
scli() { # scli USER ARGS...: as USER through TLS with the farm's CA; sets RC, OUT, ERR, TOOK
    local user=$1
    shift
    cli_run 30 --broker "$FARM_BROKER" --cafile "$FARM_CA" --user "$user" --password-file "$RUN/$user.pw" --timeout 10 "$@"
}
ready() { scli alice --json available && jtest "$OUT" "j['amount'] == 2"; }
check "the secured farm is up with 2 boards" wait_until 60 ready

scli alice reserve --amount 1
check "alice reserves a board through TLS with a password file (rc $RC)" test "$RC" = 0
S=$(awk 'NR == 2 {print $1}' <<<"$OUT")

# TLS verification: without the farm's CA, fail at once and say what to do.
T0=$(date +%s%N)
RC=0
ERR=$(timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --user alice --password-file "$RUN/alice.pw" --timeout 10 status \
    2>&1 >/dev/null) || RC=$?
TOOK=$((($(date +%s%N) - T0) / 1000000))
check "mqtts:// without --cafile exits 3 (rc $RC) at once (${TOOK} ms of a 10 s --timeout)" test "$RC" = 3 -a "$TOOK" -lt 3000
check "... saying 'TLS: certificate verify failed: give --cafile'" grep -q "TLS: certificate verify failed: give --cafile" <<<"$ERR"
PLAIN=${FARM_BROKER/mqtts:/mqtt:}
T0=$(date +%s%N)
RC=0
ERR=$(timeout 20 "$CLI_BIN" --broker "$PLAIN" --user alice --password-file "$RUN/alice.pw" --timeout 10 status \
    2>&1 >/dev/null) || RC=$?
TOOK=$((($(date +%s%N) - T0) / 1000000))
check "plain mqtt:// to the TLS port exits 3 (rc $RC) at once (${TOOK} ms)" test "$RC" = 3 -a "$TOOK" -lt 3000
check "... suggesting mqtts://" grep -q "use mqtts://" <<<"$ERR"
# A wrong password is the broker's refusal: at once too.
printf 'wrong\n' >"$RUN/wrong.pw"
chmod 600 "$RUN/wrong.pw"
RC=0
ERR=$(timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --cafile "$FARM_CA" --user alice --password-file "$RUN/wrong.pw" \
    --timeout 10 status 2>&1 >/dev/null) || RC=$?
check "a wrong password exits 3 (rc $RC), saying the broker refused it" bash -c '[[ $1 == 3 ]] && grep -q "refused the connection" <<<"$2"' _ "$RC" "$ERR"
chmod 644 "$RUN/wrong.pw"
RC=0
ERR=$(timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --cafile "$FARM_CA" --user alice --password-file "$RUN/wrong.pw" \
    status 2>&1 >/dev/null) || RC=$?
check "a password file others may read is refused (exit 2, rc $RC)" bash -c '[[ $1 == 2 ]] && grep -q "must be 0600 or stricter" <<<"$2"' _ "$RC" "$ERR"

# In a secured farm your client name is your user name: another --name (or
# ICEFARM_NAME) would wait in silence for replies the broker lets alice not
# read, so it is a usage error, said at once.
scli alice --name someoneelse status
check "--name someoneelse --user alice exits 2 (rc $RC) at once (${TOOK} ms)" test "$RC" = 2 -a "$TOOK" -lt 2000
check "... saying the client name is the user name" \
    grep -q "\-\-name someoneelse is not your broker user alice: in a secured farm your client name is your user name" <<<"$ERR"
RC=0
ERR=$(ICEFARM_NAME=someoneelse timeout 20 "$CLI_BIN" --broker "$FARM_BROKER" --cafile "$FARM_CA" --user alice \
    --password-file "$RUN/alice.pw" --timeout 10 status 2>&1 >/dev/null) || RC=$?
check "ICEFARM_NAME=someoneelse with --user alice exits 2 (rc $RC), saying to unset it" \
    bash -c '[[ $1 == 2 ]] && grep -q "unset ICEFARM_NAME" <<<"$2"' _ "$RC" "$ERR"
scli alice --name alice --json status
check "--name alice --user alice is fine (rc $RC)" test "$RC" = 0

# bob cannot use alice's board: refused before anything is sent.
scli bob evaluate --serials "$S" "$BITS/clk_1khz.bin"
check "bob's evaluate on alice's board exits 1 at once (rc $RC, ${TOOK} ms)" test "$RC" = 1 -a "$TOOK" -lt 5000
check "... saying it is reserved by another client" grep -q "reserved by another client (403: alice holds it" <<<"$ERR"
scli alice evaluate --serials "$S" "$BITS/clk_1khz.bin"
check "alice evaluates on it (rc $RC)" test "$RC" = 0

# The env file of a secured `./icefarm up` carries the CA and the demo login.
ENVF=$RUN/farm.env
{
    echo "# icefarm-up-pid=$$"
    printf 'export ICEFARM_BROKER=%q\n' "$FARM_BROKER"
    printf 'export ICEFARM_CAFILE=%q\n' "$FARM_CA"
    printf 'export ICEFARM_USER=%q\n' alice
    printf 'export ICEFARM_PASSWORD=%q\n' "$ALICE_PW"
} >"$ENVF"
chmod 600 "$ENVF"
RC=0
OUT=$(env -u ICEFARM_BROKER -u ICEFARM_USER -u ICEFARM_PASSWORD -u ICEFARM_CAFILE ICEFARM_ENV_FILE="$ENVF" \
    timeout 20 "$CLI_BIN" --json status 2>>"$RUN/cli.log") || RC=$?
check "no flags and no ICEFARM_*: the env file's broker, CA and login work (rc $RC)" \
    jtest "$OUT" "[l['client'] for l in j['leases']] == ['alice']"
scli alice end-all
