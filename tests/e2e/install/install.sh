#!/usr/bin/env bash
# The installed tree as a lab engineer gets it: `cmake --install` into a
# temporary prefix, only the client headers there, and the C example built
# against it with nothing but pkg-config, then run against a real embedded farm.
# Also: ./icefarm build's target list names everything the tree installs, so
# `cmake --install` works after `./icefarm build` (and demo, and up).
#
#   FARM_BIN=BUILD_DIR install.sh
set -euo pipefail
BUILD=${FARM_BIN:?set FARM_BIN to the build directory}
FARM_BIN=$(cd "$BUILD" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=tests/lib/checks.sh
source "$ROOT/tests/lib/checks.sh"
# shellcheck source=broker/embedded/farm.sh
source "$ROOT/broker/embedded/farm.sh"
TMP=$(mktemp -d)
trap 'farm_stop; rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix

# 1. ./icefarm's list against the tree's install(TARGETS ...) rules.
mapfile -t listed < <(sed -n 's/^INSTALL_TARGETS=(\(.*\))$/\1/p' "$ROOT/icefarm" | tr ' ' '\n')
mapfile -t installed < <(git -C "$ROOT" ls-files '*CMakeLists.txt' | while read -r f; do
    grep -hoE 'install\(TARGETS [A-Za-z0-9_-]+' "$ROOT/$f" | awk '{print $2}' || true; done | sort -u)
missing=()
for t in "${installed[@]}"; do
    [[ " ${listed[*]} " == *" $t "* ]] || missing+=("$t")
done
check "./icefarm build makes every installed target (${installed[*]})" test ${#missing[@]} -eq 0 -a ${#installed[@]} -gt 3
((${#missing[@]} == 0)) || echo "# not in INSTALL_TARGETS: ${missing[*]}"

# 2. cmake --install into a fresh prefix.
if cmake --install "$FARM_BIN" --prefix "$PREFIX" >"$TMP/install.log" 2>&1; then ok "cmake --install into a temporary prefix"
else cat "$TMP/install.log"; not_ok "cmake --install into a temporary prefix"; fi
got=$(cd "$PREFIX/include" 2>/dev/null && find . -type f | sort | tr '\n' ' ')
check "only the client headers are installed ($got)" \
    test "$got" = "./icefarm/batch.h ./icefarm/client.h ./icefarm/icefarm.h ./icefarm/usbip_client.h "
pc=$(find "$PREFIX" -name icefarm.pc | head -n 1)
check "icefarm.pc is installed" test -n "$pc"
export PKG_CONFIG_PATH=${pc%/icefarm.pc}
unset CPATH C_INCLUDE_PATH LIBRARY_PATH PKG_CONFIG_LIBDIR
check "pkg-config --modversion icefarm answers" pkg-config --modversion icefarm
libdir=$(pkg-config --variable=libdir icefarm)
check "libdir from pkg-config holds libicefarm.so (${libdir#"$PREFIX"/})" test -e "$libdir/libicefarm.so"

# 3. Every public header compiles alone; the example builds with pkg-config only.
read -r -a cflags <<<"$(pkg-config --cflags icefarm)"
read -r -a libs <<<"$(pkg-config --libs icefarm)"
for h in icefarm client batch usbip_client; do
    printf '#include <icefarm/%s.h>\nint main(void) { return 0; }\n' "$h" >"$TMP/h_$h.c"
    check "<icefarm/$h.h> compiles on its own (C11, -Wall -Wextra -Werror -pedantic)" \
        cc -std=c11 -Wall -Wextra -Werror -pedantic "${cflags[@]}" -c "$TMP/h_$h.c" -o "$TMP/h_$h.o"
done
check "the C example builds against the installed tree with pkg-config alone" \
    cc -std=c11 -Wall -Wextra -Werror "$ROOT/cli/examples/c/evaluate.c" "${cflags[@]}" "${libs[@]}" \
    -Wl,-rpath,"$libdir" -o "$TMP/evaluate"
check "the example links the installed libicefarm" \
    bash -c "ldd '$TMP/evaluate' | grep -q '$libdir/libicefarm.so'"

# 4. ... and works against a real farm.
farm_start "$TMP/run" 2 --sim-flash-ms 20 --sim-window-ms 50
farm_wait_ready 2 60
out=$(ICEFARM_LOG_LEVEL=warn ICEFARM_BROKER=$FARM_BROKER timeout 180 "$TMP/evaluate" \
    "$ROOT"/tests/bitstreams/clk_1khz.bin "$ROOT"/tests/bitstreams/clk_2khz.bin 2>&1) || true
while IFS= read -r line; do echo "# $line"; done <<<"$out"
for f in clk_1khz clk_2khz; do
    want=$(python3 -c "import zlib,sys; print(zlib.crc32(open(sys.argv[1],'rb').read()) % 100000)" \
        "$ROOT/tests/bitstreams/$f.bin")
    check "the installed example measured $f: $want pulses" grep -q "$f.bin $want\$" <<<"$out"
done
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
