#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 20).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Environment: ICEFARM_FUZZ_BUILD (build dir, default <repo>/build-fuzz),
# CC (default clang), FUZZ_TARGETS (default "scan msg xos usbip http mp usbdesc sio picoboot"), FUZZ_JOBS (parallel
# workers per target, default 1).
#
# The build is tests/fuzz/ configured as a standalone CMake project, so it needs
# only clang, libclang-rt, msgpack-c and libmosquitto, not the rest of the tree. New inputs go
# to <build>/work/<target>/corpus (seeded from tests/fuzz/corpus/<target>);
# crashes, leaks and timeouts to <build>/work/<target>/artifacts/ (those of the
# previous run move to artifacts.prev/). Exits non-zero
# if any target found one. To keep a reproducer as a regression test, copy it into
# tests/fuzz/corpus/<target>/ (ctest replays that directory in every build).
set -eu

SECS=${1:-20}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ICEFARM_FUZZ_BUILD:-$ROOT/build-fuzz}
CC=${CC:-clang}
TARGETS=${FUZZ_TARGETS:-"scan msg xos usbip http mp usbdesc sio picoboot"}
JOBS=${FUZZ_JOBS:-1}

cmake -S "$ROOT/tests/fuzz" -B "$BUILD" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=Debug >/dev/null
for t in $TARGETS; do
    cmake --build "$BUILD" --target "fuzz_$t" -j "$(nproc)"
done

status=0
for t in $TARGETS; do
    work="$BUILD/work/$t"
    # artifacts of an earlier run are kept in artifacts.prev/, not reported again
    if [ -d "$work/artifacts" ]; then
        mkdir -p "$work/artifacts.prev"
        find "$work/artifacts" -type f -exec mv -f {} "$work/artifacts.prev/" \;
    fi
    mkdir -p "$work/corpus" "$work/artifacts"
    echo "== fuzz_$t for ${SECS}s"
    parallel=""
    if [ "$JOBS" -gt 1 ]; then
        parallel="-jobs=$JOBS -workers=$JOBS"
    fi
    # -timeout: any single input slower than 25 s is reported as a hang.
    # Run inside the work dir: with -jobs libFuzzer writes fuzz-N.log to the cwd.
    # shellcheck disable=SC2086
    if ! (cd "$work" && "$BUILD/fuzz_$t" \
        -max_len=65536 -max_total_time="$SECS" -timeout=25 -rss_limit_mb=4096 \
        $parallel -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" \
        "$work/corpus" "$ROOT/tests/fuzz/corpus/$t" >"$work/log.txt" 2>&1); then
        status=1
    fi
    if [ -n "$parallel" ]; then
        cat "$work"/fuzz-*.log >>"$work/log.txt" 2>/dev/null || true
    fi
    grep -vE '^"|Uses: |^###' "$work/log.txt" | tail -n 12
    found=$(find "$work/artifacts" -type f | head -n 20)
    if [ -n "$found" ]; then
        status=1
        echo "!! fuzz_$t found problems:"
        echo "$found"
    fi
done
if [ "$status" -ne 0 ]; then
    echo "FUZZING FOUND PROBLEMS (see artifacts above)"
else
    echo "fuzzing: no crashes"
fi
exit "$status"
