#!/usr/bin/env bash
# Container health checks (compose.yml), one per role:
#   broker  the TLS listener accepts connections
#   ctl     control's retained state on the broker says online
#   http    the HTTP API answers
#   worker  the worker's retained birth on the broker says online
set -euo pipefail
ETC=${ICEFARM_ETC:-/etc/icefarm}
CA=${ICEFARM_CAFILE:-$ETC/certs/ca.crt}
HOST=${ICEFARM_BROKER_HOST:-broker}
PORT=${ICEFARM_MQTTS_PORT:-8883}
# Prints a retained payload, read as the read-only `health` dashboard user
# (msgpack; "online" is a plain string inside it). The password goes to
# mosquitto_sub through its options file ($XDG_CONFIG_HOME/mosquitto_sub, 0600 in
# a private directory), never through argv, which every process can read.
retained() {
    local cfg rc=0
    cfg=$(mktemp -d)
    (umask 077 && printf -- '-u health\n-P %s\n' "$(cat "$ETC/secrets/health")" >"$cfg/mosquitto_sub")
    XDG_CONFIG_HOME=$cfg mosquitto_sub -h "$HOST" -p "$PORT" --cafile "$CA" -t "$1" -C 1 -W 5 2>/dev/null || rc=$?
    rm -rf "$cfg"
    return "$rc"
}
case ${1:?role} in
broker) exec 3<>"/dev/tcp/${ICEFARM_LISTEN_CHECK:-127.0.0.1}/$PORT" ;;
ctl) retained icefarm/ctl/state | grep -aq online ;;
http) exec 3<>"/dev/tcp/127.0.0.1/${ICEFARM_HTTP_PORT:-8080}" ;;
worker) retained "icefarm/worker/${ICEFARM_WORKER_NAME:-worker}/state" | grep -aq online ;;
*) echo "unknown role $1" >&2; exit 2 ;;
esac
