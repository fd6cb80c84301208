# Reading Prometheus scrapes in the metrics tests (sourced after tests/lib/e2e.sh,
# which sets RUN and PY). A file of functions only.
# shellcheck shell=bash

# scrape NAME HOSTPORT: the text of http://HOSTPORT/metrics into $RUN/NAME.prom.
scrape() {
    curl -sf --max-time 10 "http://$2/metrics" -o "$RUN/$1.prom"
}

# val NAME 'SERIES': the value of one series (0 if absent) in $RUN/NAME.prom.
val() {
    "$PY" - "$RUN/$1.prom" "$2" <<'PY'
import sys
want = sys.argv[2]
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    name, _, value = line.rstrip("\n").rpartition(" ")
    if name == want:
        print(int(float(value)) if float(value).is_integer() else value)
        break
else:
    print(0)
PY
}

# total NAME FAMILY: the sum of the family's series (any labels).
total() {
    "$PY" - "$RUN/$1.prom" "$2" <<'PY'
import sys
fam = sys.argv[2]
t = 0.0
for line in open(sys.argv[1]):
    name, _, value = line.rstrip("\n").rpartition(" ")
    if name == fam or name.startswith(fam + "{"):
        t += float(value)
print(int(t))
PY
}

# moved NAME 'SERIES' BEFORE DELTA: the series now equals BEFORE + DELTA.
moved() {
    local now
    now=$(val "$1" "$2")
    [[ $now == $(($3 + $4)) ]] || {
        echo "# $2: $3 -> $now, expected +$4" >&2
        return 1
    }
}
