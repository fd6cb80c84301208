#!/usr/bin/env bash
# Check that every bitstream listed in MANIFEST exists, is 104090 bytes and matches its sha256.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rc=0 n=0
while read -r name _hz _pulses sha size; do
    case "$name" in ''|'#'*) continue ;; esac
    n=$((n + 1))
    if [ ! -f "$name" ]; then echo "MISSING $name"; rc=1; continue; fi
    got_size="$(stat -c %s "$name")"
    got_sha="$(sha256sum "$name" | cut -d' ' -f1)"
    if [ "$size" != 104090 ] || [ "$got_size" != 104090 ]; then echo "BAD SIZE $name ($got_size)"; rc=1
    elif [ "$got_sha" != "$sha" ]; then echo "BAD SHA256 $name"; rc=1
    else echo "ok $name"; fi
done < MANIFEST
[ "$n" -gt 0 ] || { echo "MANIFEST lists no files"; rc=1; }
exit $rc
