#!/usr/bin/env bash
# `cmake --install` like a Debian daemon: into a private prefix (everything stays in
# it) and, staged with DESTDIR, for the prefix /usr (units and the udev rule where
# systemd and udev read them). The units pass `systemd-analyze verify`, control's has
# StateDirectory=icefarm, the man pages are there, and each example config, with every
# option that has a value uncommented, is accepted by its daemon.
#   FARM_BIN=BUILD_DIR packaging.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=$(cd "${FARM_BIN:?set FARM_BIN to the build directory}" && pwd)
# shellcheck source=../../lib/checks.sh
source "$ROOT/tests/lib/checks.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-install.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
DAEMONS=(icefarm-ctl icefarm-wrk icefarm-http)
[[ ! -x $BUILD/ctl/dhs/icefarm-dhs ]] || DAEMONS+=(icefarm-dhs) # built where libcurl is

# 1. A private prefix.
P=$T/prefix
rc=0
cmake --install "$BUILD" --prefix "$P" >"$T/install.log" 2>&1 || rc=$?
check "cmake --install --prefix PREFIX succeeds (rc=$rc)" test "$rc" = 0
for d in "${DAEMONS[@]}"; do
    check "$d: binary, unit, example config and man page in the prefix" \
        test -x "$P/bin/$d" -a -s "$P/lib/systemd/system/$d.service" -a -s "$P/etc/icefarm/$d.conf.example" \
        -a -s "$P/share/man/man1/$d.1"
done
check "icefarm-cli's man page" test -s "$P/share/man/man1/icefarm-cli.1"
check "the MIT licence in share/doc/icefarm" grep -q '^MIT License' "$P/share/doc/icefarm/LICENSE"
# Every installed program answers --version (status 0, its name and the version).
for b in "$P"/bin/*; do
    out=$("$b" --version 2>&1) && rc=0 || rc=$?
    check "$(basename "$b") --version (rc=$rc: $out)" \
        bash -c '[[ $1 == 0 && $2 =~ ^$3\ [0-9]+\.[0-9]+ ]]' _ "$rc" "$out" "$(basename "$b")"
done
check "the man page documents the options (icefarm-ctl.1 has --warn-before)" grep -q 'warn\\-before' "$P/share/man/man1/icefarm-ctl.1"
check "the udev rule in the prefix" test -s "$P/lib/udev/rules.d/60-icefarm.rules"
check "the client udev rule (ModemManager off the boards) in the prefix" test -s "$P/lib/udev/rules.d/70-icefarm-client.rules"
check "icefarm-ctl.service: StateDirectory=icefarm and --data there" \
    grep -qx 'StateDirectory=icefarm' "$P/lib/systemd/system/icefarm-ctl.service"
check "  ... it runs the installed binary with its config as a credential" \
    grep -qx "ExecStart=$P/bin/icefarm-ctl --config %d/icefarm-ctl.conf --data %S/icefarm" "$P/lib/systemd/system/icefarm-ctl.service"
if command -v systemd-analyze >/dev/null; then
    out=$(MANPATH=$P/share/man systemd-analyze verify "$P"/lib/systemd/system/*.service 2>&1) && rc=0 || rc=$?
    check "systemd-analyze verify accepts the units (rc=$rc${out:+: $out})" test "$rc" = 0
else
    echo "# systemd-analyze is not installed: units not verified"
fi

# 2. Each example config, every option with a value uncommented, is accepted: the
# daemon starts and keeps running (a config error exits at once, status 1 or 2).
for d in "${DAEMONS[@]}"; do
    conf=$T/$d.conf
    sed -E 's/^#([a-z][a-z-]* = .+)$/\1/' "$P/etc/icefarm/$d.conf.example" >"$conf"
    n=$(grep -cE '^[a-z]' "$conf" || true)
    extra=()
    case $d in
    icefarm-ctl) extra=(--data "$T/ctl-data") ;;
    icefarm-wrk) extra=(--sim 1) ;;
    icefarm-http) extra=(--listen "127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')") ;;
    esac
    ASAN_OPTIONS=detect_leaks=0 "$P/bin/$d" --config "$conf" --broker mqtt://127.0.0.1:1 "${extra[@]}" >"$T/$d.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    sleep 1.5
    if kill -0 "$pid" 2>/dev/null; then
        ok "$d accepts its example config with $n settings uncommented"
        kill -TERM "$pid" 2>/dev/null || true
    else
        rc=0
        wait "$pid" || rc=$?
        not_ok "$d accepts its example config with $n settings uncommented (exited $rc: $(head -n 3 "$T/$d.log"))"
    fi
done

# 3. For the prefix /usr, staged with DESTDIR: units and the rule where systemd and udev read them.
S=$T/stage
rc=0
DESTDIR=$S cmake --install "$BUILD" --prefix /usr >"$T/install-usr.log" 2>&1 || rc=$?
check "DESTDIR=STAGE cmake --install --prefix /usr succeeds (rc=$rc)" test "$rc" = 0
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
udevdir=$(pkg-config --variable=udevdir udev 2>/dev/null || echo /lib/udev)
check "the units go to systemd's unit directory ($unitdir)" test -s "$S$unitdir/icefarm-ctl.service"
check "  ... and run /usr/bin/icefarm-ctl with /etc/icefarm/icefarm-ctl.conf" \
    grep -qx 'LoadCredential=icefarm-ctl.conf:/etc/icefarm/icefarm-ctl.conf' "$S$unitdir/icefarm-ctl.service"
check "the udev rule goes to udev's rules directory ($udevdir/rules.d)" test -s "$S$udevdir/rules.d/60-icefarm.rules"
check "the example configs go to /etc/icefarm" test -s "$S/etc/icefarm/icefarm-wrk.conf.example"
check "the man pages to /usr/share/man" test -s "$S/usr/share/man/man1/icefarm-wrk.1"
check "the licence to /usr/share/doc/icefarm" test -s "$S/usr/share/doc/icefarm/LICENSE"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
