#!/usr/bin/env bash
# libicefarm.so exports exactly the documented API: the ICEFARM_API functions
# of the installed headers, the version script's list, and `nm -D` of the built
# library must be the same set. Also: the installed headers name no msgpack-c
# or libmosquitto type and include nothing but each other and the C library.
#
#   exports.sh LIBICEFARM_SO SOURCE_DIR
set -euo pipefail
LIB=${1:?usage: exports.sh LIBICEFARM_SO SOURCE_DIR}
SRC=${2:?usage: exports.sh LIBICEFARM_SO SOURCE_DIR}
# shellcheck source=tests/lib/checks.sh
source "$SRC/tests/lib/checks.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

headers=("$SRC"/cli/include/icefarm/*.h)
sed -n 's/^ICEFARM_API[^(]*[ *]\([a-z_0-9]*\)(.*/\1/p' "${headers[@]}" | sort >"$TMP/documented"
sed -n 's/^ *\(icefarm_[a-z_0-9]*\);$/\1/p' "$SRC/cli/lib/libicefarm.map" | sort >"$TMP/map"
# Defined dynamic symbols, minus the version node itself (type A).
nm -D --defined-only "$LIB" | awk '$2 != "A" {print $3}' | sed 's/@.*//' | sort >"$TMP/exported"

n=$(wc -l <"$TMP/documented")
check "the headers declare an API ($n functions)" test "$n" -gt 20
if diff -u "$TMP/documented" "$TMP/map" >"$TMP/d1"; then ok "the version script lists exactly the headers' ICEFARM_API functions"
else cat "$TMP/d1"; not_ok "the version script and the headers disagree"; fi
if diff -u "$TMP/documented" "$TMP/exported" >"$TMP/d2"; then ok "nm -D shows exactly the documented API ($(wc -l <"$TMP/exported") symbols)"
else cat "$TMP/d2"; not_ok "libicefarm.so exports something else than the documented API"; fi
if ! grep -nE '(msgpack|mosquitto|ifm|IFM)_[A-Za-z_]|<(msgpack|mosquitto)' "${headers[@]}" >"$TMP/leaks"; then ok "no msgpack-c, libmosquitto or proto names in the public headers"
else cat "$TMP/leaks"; not_ok "the public headers leak internal types"; fi
if ! grep -hE '^#include' "${headers[@]}" | grep -vE '^#include ("icefarm/(client|batch|usbip_client)\.h"|<std(bool|def|int)\.h>)$' >"$TMP/inc"; then
    ok "the public headers include only each other and <stdbool.h> <stddef.h> <stdint.h>"
else cat "$TMP/inc"; not_ok "the public headers include more"; fi
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
