#!/usr/bin/env bash
# shellcheck disable=SC2154 # FARM_*: set by the sourced farm.sh
# Two builds of icefarm, back to back: the same benchmark programs with the same
# arguments against each build's own farm, ROUNDS times, the builds interleaved
# (A B, B A, A B, ...) so that load on a shared machine falls on both alike.
# Prints every run's key=value lines and a table of medians with B/A.
#
#   tests/bench/compare.sh BUILD_A BUILD_B [ROUNDS]     (default 3)
#
# Each BUILD is a configured build directory; its source tree (for farm.sh) is
# read from its CMakeCache.txt, so a build of an older commit uses that commit's
# launcher. Sizes as tests/bench/run.sh: ICEFARM_BENCH_WORKERS (50) x
# ICEFARM_BENCH_BOARDS (20) boards for reserve/end, ICEFARM_BENCH_SECONDS (10)
# per load; evaluations on 1, 8 and 64 boards with a 50 ms count window.
set -euo pipefail
export ICEFARM_LOG_LEVEL=warn
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
ROUNDS=${3:-3}
WORKERS=${ICEFARM_BENCH_WORKERS:-50}
PER=${ICEFARM_BENCH_BOARDS:-20}
SECS=${ICEFARM_BENCH_SECONDS:-10}
WINDOW_MS=${ICEFARM_BENCH_WINDOW_MS:-50}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One pass of every benchmark against the build in $1, its lines prefixed by $2.
pass() {
    FARM_BIN=$1
    local tag=$2 src farm line c0 c1 boards per
    run="" extra=() # globals of this subshell: stop_all reads them on exit
    src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$FARM_BIN/CMakeCache.txt")
    farm=$src/broker/embedded/farm.sh
    [[ -f $farm ]] || farm=$src/broker/farm.sh # before the tree was split by concern
    # shellcheck source=../../broker/embedded/farm.sh
    source "$farm"
    run=$(mktemp -d)
    # shellcheck disable=SC2317 # invoked by the trap
    stop_all() { for p in "${extra[@]}"; do kill -9 "$p" 2>/dev/null || true; done; farm_stop; rm -rf "$run"; }
    trap stop_all EXIT # pass runs in a subshell
    FARM_WORKER=w0 farm_start "$run/cp" "$PER" --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
    for ((i = 1; i < WORKERS; i++)); do
        "$FARM_BIN/wrk/icefarm-wrk" --broker "$FARM_BROKER" --name "w$i" --sim "$PER" --sim-flash-ms 20 \
            --sim-window-ms "$WINDOW_MS" >"$run/cp/wrk$i.log" 2>&1 &
        extra+=($!)
    done
    farm_wait_ready $((WORKERS * PER)) 300
    for clients in 1 8 32; do
        c0=$(cpu_ticks "${FARM_PIDS[1]}")
        line=$("$FARM_BIN/tests/bench/bench_reserve" "$FARM_BROKER" "$clients" "$SECS")
        c1=$(cpu_ticks "${FARM_PIDS[1]}")
        echo "$tag mqtt $line ctl_cpu_ticks=$((c1 - c0))"
    done
    farm_start_http
    for clients in 1 8; do
        echo "$tag http $("$FARM_BIN/tests/bench/bench_http" "$FARM_HTTP" "$clients" "$SECS")"
    done
    for p in "${extra[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    extra=()
    farm_stop
    for boards in 1 8 64; do
        FARM_WORKER=evalw farm_start "$run/ev$boards" "$boards" --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
        farm_wait_ready "$boards" 120
        per=$((boards >= 64 ? 20 : 40))
        c0=$(cpu_ticks "${FARM_PIDS[2]}")
        line=$("$FARM_BIN/tests/bench/bench_eval" "$FARM_BROKER" "$boards" "$per" 2 "$WINDOW_MS")
        c1=$(cpu_ticks "${FARM_PIDS[2]}")
        echo "$tag eval $line wrk_cpu_ticks=$((c1 - c0))"
        farm_stop
    done
    FARM_WORKER=evalw farm_start "$run/raw" 64 --sim-flash-ms 20 --sim-window-ms "$WINDOW_MS"
    farm_wait_ready 64 120
    echo "$tag raw $("$FARM_BIN/tests/bench/bench_eval_raw" "$FARM_BROKER" 64 20 2 "$WINDOW_MS")"
    farm_stop
}

echo "A=$A"
echo "B=$B"
echo "rounds=$ROUNDS workers=$WORKERS boards_per_worker=$PER seconds=$SECS window_ms=$WINDOW_MS"
for ((r = 1; r <= ROUNDS; r++)); do
    order=(A B)
    ((r % 2 == 0)) && order=(B A)
    for t in "${order[@]}"; do
        dir=$A
        [[ $t == B ]] && dir=$B
        echo "# round $r build $t load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
        (pass "$dir" "$t $r") | tee -a "$OUT/lines"
    done
done

python3 - "$OUT/lines" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    build, _rnd, area = f[0], f[1], f[2]
    kv = dict(x.split("=", 1) for x in f[3:] if "=" in x)
    size = kv.get("clients") or kv.get("boards")
    for k, v in kv.items():
        if k in ("clients", "boards", "pairs", "evals", "seconds", "refused", "errors"):
            continue
        try:
            rows.setdefault((area, size, k), {}).setdefault(build, []).append(float(v))
        except ValueError:
            pass
# Higher is better for rates; lower for latencies, overheads and CPU.
print(f"\n{'area':5} {'size':>4} {'metric':24} {'A median':>10} {'B median':>10} {'B/A':>6}  worse by >10%?")
for (area, size, k), by in rows.items():
    if "A" not in by or "B" not in by:
        continue
    a, b = statistics.median(by["A"]), statistics.median(by["B"])
    ratio = b / a if a else float("nan")
    higher_better = k.endswith("per_s")
    worse = (ratio < 0.9) if higher_better else (ratio > 1.1)
    print(f"{area:5} {size:>4} {k:24} {a:10.2f} {b:10.2f} {ratio:6.2f}  {'WORSE' if worse else ''}")
PY
