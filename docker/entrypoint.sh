#!/usr/bin/env bash
# The container entrypoint, one role per service (docker/compose.yml):
#   init     first start: make the lab CA and certificates, the service users and
#            the client users of ICEFARM_USERS ("user:role ..."; idempotent: existing
#            files are kept); with ICEFARM_OPERATOR_DIR (a directory the operator
#            reads on the host) it writes the client users' passwords there
#            (`passwords`, mode 0600, owned by the directory's owner), `ca.crt`, and
#            `prometheus-http.password`: the password of `metrics` (a dashboard
#            account), which docker/prometheus.yml scrapes icefarm-http's /metrics as
#   broker   Mosquitto with TLS, passwords and the icefarm ACL plugin
#   ctl      icefarm-ctl (leases in $ICEFARM_DATA)
#   http     icefarm-http (the documented HTTP API)
#   worker   icefarm-wrk (the host's USB boards; ICEFARM_SIM=N for simulated ones,
#            which need no firmware images)
# Paths can be moved with ICEFARM_PREFIX (binaries in $ICEFARM_PREFIX/bin etc.), which is
# how tests/docker runs this same script directly on a machine without docker.
set -euo pipefail

PREFIX=${ICEFARM_PREFIX:-/usr/local}
BIN=${ICEFARM_BIN_DIR:-$PREFIX/bin}
SHARE=${ICEFARM_SHARE_DIR:-$PREFIX/share/icefarm}
PLUGIN=${ICEFARM_PLUGIN:-$PREFIX/lib/icefarm/icefarm_acl.so}
ETC=${ICEFARM_ETC:-/etc/icefarm}
CERTS=$ETC/certs
CA=$CERTS/ca.crt
BROKER_HOST=${ICEFARM_BROKER_HOST:-broker}
MQTTS_PORT=${ICEFARM_MQTTS_PORT:-8883}
WSS_PORT=${ICEFARM_WSS_PORT:-8884}
export ICEFARM_BROKER=${ICEFARM_BROKER:-mqtts://$BROKER_HOST:$MQTTS_PORT}
export ICEFARM_CAFILE=${ICEFARM_CAFILE:-$CA}

# A service's password is written by `init` into $ETC/secrets/<user> (0600, in a
# 0700 directory) and reaches the daemon only as --password-file: never on a
# command line, which every process on the host can read.
secret_file() { printf '%s\n' "$ETC/secrets/$1"; }
secret() { cat "$(secret_file "$1")"; }

role_init() {
    mkdir -p "$ETC/secrets"
    chmod 755 "$ETC"
    chmod 700 "$ETC/secrets"
    local extra=()
    read -ra extra <<<"${ICEFARM_CERT_HOSTS:-}" # "--host NAME ..." for the certificate, space-separated
    "$SHARE/secure/make-certs.sh" "$CERTS" --host "$BROKER_HOST" "${extra[@]}" >/dev/null
    local pair user role pw
    for pair in "ctl:control" "http:gateway" "health:dashboard" "metrics:dashboard" "dhs:client" \
        "${ICEFARM_WORKER_NAME:-worker}:worker" ${ICEFARM_USERS:-}; do
        user=${pair%%:*} role=${pair#*:}
        [[ -s $ETC/secrets/$user ]] && continue
        pw=$("$SHARE/secure/add-user.sh" "$ETC" "$user" "$role" --generate 2>/dev/null | tail -n 1)
        (umask 077 && printf '%s\n' "$pw" >"$ETC/secrets/$user")
        chmod 600 "$ETC/secrets/$user"
        echo "user: $user ($role) password in $ETC/secrets/$user"
    done
    echo "ca: $CA"
    [[ -n ${ICEFARM_OPERATOR_DIR:-} ]] && operator_files "$ICEFARM_OPERATOR_DIR"
    return 0
}

# operator_files DIR: the client users' passwords (`user password` lines, 0600) and
# the CA, for the operator; owned by whoever owns DIR (mkdir it first to own them).
operator_files() {
    local dir=$1 owner pair user tmp
    mkdir -p "$dir"
    owner=$(stat -c %u:%g "$dir")
    tmp=$dir/.passwords.$$
    (umask 077 && : >"$tmp")
    for pair in ${ICEFARM_USERS:-}; do
        user=${pair%%:*}
        printf '%s %s\n' "$user" "$(secret "$user")" >>"$tmp"
    done
    chown "$owner" "$tmp"
    mv -f "$tmp" "$dir/passwords"
    cp "$CA" "$dir/ca.crt" && chown "$owner" "$dir/ca.crt" && chmod 644 "$dir/ca.crt"
    # What docker/prometheus.yml logs in to icefarm-http's /metrics with (user metrics).
    tmp=$dir/.prometheus-http.password.$$
    (umask 077 && secret metrics >"$tmp")
    chown "$owner" "$tmp"
    mv -f "$tmp" "$dir/prometheus-http.password"
    echo "operator: the passwords of ${ICEFARM_USERS:-no client user} are in passwords, the CA in ca.crt, the metrics scrape's in prometheus-http.password, in the directory mounted at $dir (compose: ICEFARM_OPERATOR_DIR, default docker/operator)"
}

role_broker() {
    local conf=$ETC/mosquitto.conf
    sed -e "s,@HOST@,${ICEFARM_LISTEN_HOST:-0.0.0.0}," -e "s,@MQTTS_PORT@,$MQTTS_PORT," -e "s,@WSS_PORT@,$WSS_PORT," \
        -e "s,@CERTS@,$CERTS," -e "s,@ETC@,$ETC," -e "s,@PLUGIN@,$PLUGIN," "$SHARE/secure/secure.conf.in" >"$conf"
    # As many sockets as this host lets a process have (a fixed `ulimits:` in compose
    # above the host's hard limit stops the container from starting).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec mosquitto -c "$conf"
}

role_ctl() {
    exec "$BIN/icefarm-ctl" --user ctl --password-file "$(secret_file ctl)" --data "${ICEFARM_DATA:-/var/lib/icefarm}" "$@"
}

role_http() {
    exec "$BIN/icefarm-http" --user http --password-file "$(secret_file http)" --listen "${ICEFARM_HTTP_LISTEN:-0.0.0.0:8080}" "$@"
}

# Simulated boards need no firmware images: drop the paths compose sets when those
# files are absent. Real boards do: wait for them (saying so once a minute) rather
# than exit into a restart loop.
worker_firmware() {
    local var missing=() i=0
    for var in ICEFARM_DEFAULT ICEFARM_PULSE_COUNT ICEFARM_VARIANCE; do
        [[ -n ${!var:-} && ! -e ${!var} ]] && missing+=("$var")
    done
    ((${#missing[@]})) || return 0
    if [[ ${ICEFARM_SIM:-0} =~ ^[1-9][0-9]*$ ]]; then
        for var in "${missing[@]}"; do
            echo "worker: simulated boards: ${!var} is absent, using the simulator's own image for $var"
            unset "$var"
        done
        return 0
    fi
    while true; do
        missing=()
        for var in ICEFARM_DEFAULT ICEFARM_PULSE_COUNT ICEFARM_VARIANCE; do
            [[ -n ${!var:-} && ! -e ${!var} ]] && missing+=("${!var}")
        done
        ((${#missing[@]})) || return 0
        if ((i % 60 == 0)); then
            echo "worker: waiting for the firmware images ${missing[*]}: put them in the firmware directory" \
                "(compose: ICEFARM_FIRMWARE_DIR, default docker/firmware), or set ICEFARM_SIM=N for simulated boards"
        fi
        sleep 1
        i=$((i + 1))
    done
}

role_worker() {
    local name=${ICEFARM_WORKER_NAME:-worker}
    worker_firmware
    exec "$BIN/icefarm-wrk" --name "$name" --user "$name" --password-file "$(secret_file "$name")" "$@"
}

# icefarm-dhs (the optional `dhs` service): the farm as a DCSS hardware server.
role_dhs() {
    exec "$BIN/icefarm-dhs" --user dhs --password-file "$ETC/secrets/dhs" "$@"
}

role=${1:-ctl}
shift || true
case $role in
init | broker | ctl | http | worker | dhs) "role_$role" "$@" ;;
*) exec "$role" "$@" ;;
esac
