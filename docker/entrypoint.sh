#!/usr/bin/env bash
# The container entrypoint, one role per service (docker/compose.yml):
#   init     first start: make the lab CA and certificates and the service users
#            (idempotent: existing files are kept), print the generated passwords
#   broker   Mosquitto with TLS, passwords and the icefarm ACL plugin
#   ctl      icefarm-ctl (leases in $ICEFARM_DATA)
#   http     icefarm-http (the documented HTTP API)
#   worker   icefarm-wrk (the host's USB boards; ICEFARM_SIM=N for simulated ones)
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

# A service's password, written by `init` into $ETC/secrets/<user> (0600).
secret() { cat "$ETC/secrets/$1"; }

role_init() {
    mkdir -p "$ETC/secrets"
    chmod 755 "$ETC"
    chmod 700 "$ETC/secrets"
    "$SHARE/secure/make-certs.sh" "$CERTS" --host "$BROKER_HOST" ${ICEFARM_CERT_HOSTS:-} >/dev/null
    local pair user role
    for pair in "ctl:control" "http:gateway" "health:dashboard" "${ICEFARM_WORKER_NAME:-worker}:worker" ${ICEFARM_USERS:-}; do
        user=${pair%%:*} role=${pair#*:}
        [[ -s $ETC/secrets/$user ]] && continue
        "$SHARE/secure/add-user.sh" "$ETC" "$user" "$role" --generate 2>/dev/null | tail -n 1 >"$ETC/secrets/$user"
        chmod 600 "$ETC/secrets/$user"
        echo "user: $user ($role) password in $ETC/secrets/$user"
    done
    echo "ca: $CA"
}

role_broker() {
    local conf=$ETC/mosquitto.conf
    sed -e "s,@HOST@,${ICEFARM_LISTEN_HOST:-0.0.0.0}," -e "s,@MQTTS_PORT@,$MQTTS_PORT," -e "s,@WSS_PORT@,$WSS_PORT," \
        -e "s,@CERTS@,$CERTS," -e "s,@ETC@,$ETC," -e "s,@PLUGIN@,$PLUGIN," "$SHARE/secure/secure.conf.in" >"$conf"
    exec mosquitto -c "$conf"
}

role_ctl() {
    exec "$BIN/icefarm-ctl" --user ctl --password "$(secret ctl)" --data "${ICEFARM_DATA:-/var/lib/icefarm}" "$@"
}

role_http() {
    exec "$BIN/icefarm-http" --user http --password "$(secret http)" --listen "${ICEFARM_HTTP_LISTEN:-0.0.0.0:8080}" "$@"
}

role_worker() {
    local name=${ICEFARM_WORKER_NAME:-worker}
    exec "$BIN/icefarm-wrk" --name "$name" --user "$name" --password "$(secret "$name")" "$@"
}

role=${1:-ctl}
shift || true
case $role in
init | broker | ctl | http | worker) "role_$role" "$@" ;;
*) exec "$role" "$@" ;;
esac
