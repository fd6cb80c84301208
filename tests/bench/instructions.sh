#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: stable on a loaded machine,
# where wall-clock numbers are not. One build's daemon at a time runs under
# valgrind; its counters are zeroed once the farm is ready and dumped after a
# fixed load, so start-up is not counted.
#
#   tests/bench/instructions.sh BUILD_DIR OUT_DIR
#
# CG_W, CG_P, CG_CLIENTS ("1 8") and CG_SECS change the control-plane load;
# CG_ONLY=ctl stops after control. Prints one line per measurement: what, the instruction total (ir=) and the
# benchmark's own line; divide ir by pairs or evals. Loads: control (10 workers x
# 20 boards) with 1 and 8 reserve/end clients for CG_SECS (20) s each, icefarm-http
# with 1 client, the worker with 8 boards x 40 evaluations, and the bench_eval and
# bench_eval_raw clients themselves (64 boards x 20). Needs valgrind. A build of an
# older commit uses that commit's farm.sh (read from its CMakeCache.txt).
set -euo pipefail
export ICEFARM_LOG_LEVEL=warn
REAL=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$REAL/CMakeCache.txt")
farm=$src/broker/embedded/farm.sh
[[ -f $farm ]] || farm=$src/broker/farm.sh
# A shadow build dir whose daemons named in CG run under callgrind.
SH=$(mktemp -d)
for d in "$REAL"/*; do ln -s "$d" "$SH/$(basename "$d")"; done
rm "$SH/ctl" "$SH/wrk"
mkdir -p "$SH/ctl" "$SH/wrk"
for d in "$REAL"/ctl/*; do ln -s "$d" "$SH/ctl/$(basename "$d")"; done
for d in "$REAL"/wrk/*; do ln -s "$d" "$SH/wrk/$(basename "$d")"; done
rm "$SH/ctl/http"; mkdir -p "$SH/ctl/http"
for d in "$REAL"/ctl/http/*; do ln -s "$d" "$SH/ctl/http/$(basename "$d")"; done
wrap() { # PATH-IN-SHADOW NAME
    rm -f "$SH/$1"
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --compress-strings=no --callgrind-out-file=%s/%s.cg "%s" "$@"\n' "$OUT" "$2" "$REAL/$1" >"$SH/$1"
    chmod +x "$SH/$1"
}
FARM_BIN=$SH
# shellcheck source=../../broker/embedded/farm.sh
source "$farm"
RUN=$(mktemp -d)
extra=()
cleanup() { for p in "${extra[@]}"; do kill -9 "$p" 2>/dev/null || true; done; farm_stop; rm -rf "$RUN" "$SH"; }
trap cleanup EXIT
zero() { callgrind_control -z "$1" >/dev/null 2>&1; }
dump() {
    callgrind_control -d "$1" >/dev/null 2>&1
    sleep 1
}
# total Ir of the newest dump of NAME
ir() {
    local f
    f=$(find "$OUT" -maxdepth 1 -name "$1.cg.*" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
    awk '/^summary:|^totals:/ {print $2; exit}' "$f"
}

# ---- control plane: ctl and http under callgrind ----
wrap ctl/icefarm-ctl ctl
wrap ctl/http/icefarm-http http
W=${CG_W:-10} P=${CG_P:-20}
FARM_WORKER=w0 farm_start "$RUN/cp" "$P" --sim-flash-ms 20 --sim-window-ms 50
for ((i = 1; i < W; i++)); do
    "$REAL/wrk/icefarm-wrk" --broker "$FARM_BROKER" --name "w$i" --sim "$P" --sim-flash-ms 20 --sim-window-ms 50 >"$RUN/cp/wrk$i.log" 2>&1 &
    extra+=($!)
done
farm_wait_ready $((W * P)) 600
CTL=${FARM_PIDS[1]}
for c in ${CG_CLIENTS:-1 8}; do
    zero "$CTL"
    line=$("$REAL/tests/bench/bench_reserve" "$FARM_BROKER" "$c" "${CG_SECS:-20}")
    dump "$CTL"
    echo "ctl clients=$c ir=$(ir ctl) $line"
done
if [[ ${CG_ONLY:-} == ctl ]]; then exit 0; fi
farm_start_http
sleep 5
HTTP=${FARM_PIDS[-1]}
zero "$HTTP"
line=$("$REAL/tests/bench/bench_http" "$FARM_HTTP" 1 "${CG_SECS:-20}")
dump "$HTTP"
echo "http clients=1 ir=$(ir http) $line"
for p in "${extra[@]}"; do kill -9 "$p" 2>/dev/null || true; done
extra=()
farm_stop

# ---- evaluations: the worker under callgrind, 8 boards ----
rm -f "$SH/ctl/icefarm-ctl"; ln -s "$REAL/ctl/icefarm-ctl" "$SH/ctl/icefarm-ctl"
wrap wrk/icefarm-wrk wrk
FARM_WORKER=evalw farm_start "$RUN/ev" 8 --sim-flash-ms 20 --sim-window-ms 50
farm_wait_ready 8 600
WRK=${FARM_PIDS[2]}
zero "$WRK"
line=$("$REAL/tests/bench/bench_eval" "$FARM_BROKER" 8 40 2 50)
dump "$WRK"
echo "wrk boards=8 ir=$(ir wrk) $line"
farm_stop

# ---- the batch engine: the bench_eval client under callgrind, 64 boards ----
rm -f "$SH/wrk/icefarm-wrk"; ln -s "$REAL/wrk/icefarm-wrk" "$SH/wrk/icefarm-wrk"
FARM_WORKER=evalw farm_start "$RUN/cl" 64 --sim-flash-ms 20 --sim-window-ms 50
farm_wait_ready 64 300
for engine in bench_eval bench_eval_raw; do
    line=$(valgrind --tool=callgrind --callgrind-out-file="$OUT/$engine.cg.1" "$REAL/tests/bench/$engine" "$FARM_BROKER" 64 20 2 50 2>/dev/null)
    echo "$engine boards=64 ir=$(ir "$engine") $line"
done
farm_stop
