#!/usr/bin/env bash
# make-certs.sh DIR [--host NAME]... [--client NAME]... [--days N] [--force]
#
# A private certificate authority for one lab, made with openssl:
#
#   DIR/ca.crt ca.key            the lab CA (10 years). Give ca.crt to every
#                                client (--cafile); keep ca.key offline if you can.
#   DIR/server.crt server.key    the broker's certificate, for localhost,
#                                127.0.0.1, this host's name and every --host.
#   DIR/client-NAME.crt .key     optional client certificates (--client NAME), for
#                                a broker configured with require_certificate.
#
# An existing CA is reused, so running the script again (e.g. to add a --client)
# keeps every issued certificate valid. An existing server certificate is kept
# too; --force re-issues it for the --host names given this time. server.key
# is made readable by the `mosquitto` group when it exists (the broker drops
# root privileges before it reads its files); the other private keys are
# readable by their owner only.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

(($#)) || usage
[[ $1 != -* ]] || usage
DIR=$1
shift
HOSTS=(localhost 127.0.0.1 ::1)
CLIENTS=()
DAYS=825
FORCE=0
while (($#)); do
    case $1 in
    --host) HOSTS+=("${2:?--host needs a name}"); shift 2 ;;
    --client) CLIENTS+=("${2:?--client needs a name}"); shift 2 ;;
    --days) DAYS=${2:?--days needs a number}; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h | --help) usage ;;
    *) echo "make-certs.sh: unknown option $1" >&2; usage ;;
    esac
done
[[ $DAYS =~ ^[1-9][0-9]*$ ]] || { echo "make-certs.sh: --days must be a positive number" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed (apt install openssl)" >&2; exit 1; }

h=$(hostname 2>/dev/null || true)
[[ -n $h && $h != localhost ]] && HOSTS+=("$h")

mkdir -p "$DIR"
chmod 755 "$DIR"
umask 077
GROUP=
getent group mosquitto >/dev/null 2>&1 && GROUP=mosquitto

say() { printf 'make-certs: %s\n' "$*" >&2; }

# Elliptic-curve keys: small, fast, and supported by every MQTT client library we use.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [[ ! -f $DIR/ca.key || ! -f $DIR/ca.crt ]]; then
    say "new lab CA in $DIR/ca.crt"
    newkey "$DIR/ca.key"
    openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days 3650 -subj "/O=icefarm/CN=icefarm lab CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$DIR/ca.crt"
    chmod 644 "$DIR/ca.crt"
fi

# Signs DIR/NAME.csr into DIR/NAME.crt with the given extensions.
sign() {
    local name=$1 ext=$2
    openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
        -CAserial "$DIR/ca.srl" -sha256 -days "$DAYS" -extfile <(printf '%s\n' "$ext") \
        -out "$DIR/$name.crt" 2>/dev/null
    rm -f "$DIR/$name.csr"
    chmod 644 "$DIR/$name.crt"
}

if [[ $FORCE == 1 || ! -f $DIR/server.crt || ! -f $DIR/server.key ]]; then
    san=() seen=" "
    for n in "${HOSTS[@]}"; do
        [[ $seen == *" $n "* ]] && continue
        seen+="$n "
        if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=("IP:$n"); else san+=("DNS:$n"); fi
    done
    say "server certificate for ${san[*]}"
    newkey "$DIR/server.key"
    openssl req -new -key "$DIR/server.key" -subj "/O=icefarm/CN=${HOSTS[${#HOSTS[@]} - 1]}" -out "$DIR/server.csr"
    sign server "$(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s' \
        "$(IFS=,; echo "${san[*]}")")"
    if [[ -n $GROUP ]]; then
        chgrp "$GROUP" "$DIR/server.key" && chmod 640 "$DIR/server.key"
    else
        say "no mosquitto group here: $DIR/server.key is readable by its owner only; the broker must run as that user"
    fi
fi

for c in "${CLIENTS[@]}"; do
    if [[ ! $c =~ ^[A-Za-z0-9._@-]+$ ]]; then
        echo "make-certs.sh: client name \"$c\": use letters, digits and ._@- only" >&2
        exit 2
    fi
    say "client certificate $DIR/client-$c.crt (CN=$c)"
    newkey "$DIR/client-$c.key"
    openssl req -new -key "$DIR/client-$c.key" -subj "/O=icefarm/CN=$c" -out "$DIR/client-$c.csr"
    sign "client-$c" "$(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth')"
done

openssl verify -CAfile "$DIR/ca.crt" "$DIR/server.crt" >/dev/null
say "done: $DIR"
