#!/usr/bin/env bash
# add-user.sh DIR USER ROLE [--password-stdin | --generate]
#                                                add a user, or change its role/password
# add-user.sh --delete DIR USER                  remove a user
#
# DIR holds the broker's `passwd` (a Mosquitto password file, salted PBKDF2
# hashes made by mosquitto_passwd) and `roles` (`user role` lines read by the
# icefarm_acl plugin). ROLE is one of:
#   control    icefarm-ctl          worker     an icefarm-wrk (USER = its --name)
#   client     people and programs  gateway    the HTTP shim
#   operator   a client who may also reboot and delete anybody's boards
#   dashboard  read-only monitoring
# The password is asked for twice on a terminal; with --password-stdin it is
# read as one line from standard input (for scripts; it never appears in argv);
# --generate makes a random one and prints it on stdout (service accounts).
#
# The running broker picks the change up on SIGHUP:
#   kill -HUP $(pidof mosquitto)      or      docker-compose -f docker/compose.yml kill -s HUP broker
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

ROLES="control worker client operator gateway dashboard"

valid_user() {
    # One MQTT topic level (it names icefarm/client/<user>/...), and safe in the
    # password file (no ':') and the roles file (no blanks).
    local u=$1
    [[ -n $u && ${#u} -le 127 && $u != \$* && $u != *[/+#:[:space:]]* ]]
}

DELETE=0
if [[ ${1:-} == --delete ]]; then
    DELETE=1
    shift
fi
(($# >= 2)) || usage
DIR=$1 USER_NAME=$2
shift 2
ROLE=
FROM_STDIN=0
if ((!DELETE)); then
    (($#)) || usage
    ROLE=$1
    shift
fi
while (($#)); do
    case $1 in
    --password-stdin) FROM_STDIN=1; shift ;;
    --generate) FROM_STDIN=2; shift ;;
    *) usage ;;
    esac
done

command -v mosquitto_passwd >/dev/null || { echo "add-user.sh: mosquitto_passwd not found (apt install mosquitto)" >&2; exit 1; }
valid_user "$USER_NAME" || { echo "add-user.sh: \"$USER_NAME\" cannot be a username (1-127 bytes; no / + # : or blanks; no leading \$)" >&2; exit 2; }
if ((!DELETE)) && [[ " $ROLES " != *" $ROLE "* ]]; then
    echo "add-user.sh: unknown role \"$ROLE\" (one of: $ROLES)" >&2
    exit 2
fi

mkdir -p "$DIR"
PASSWD=$DIR/passwd
ROLEFILE=$DIR/roles
GROUP=
getent group mosquitto >/dev/null 2>&1 && GROUP=mosquitto

# The broker runs as `mosquitto` (it drops root before reading these files):
# the password file is readable by that group only, the roles file by anyone.
fix_modes() {
    if [[ -n $GROUP ]]; then
        chgrp "$GROUP" "$PASSWD" "$ROLEFILE" 2>/dev/null || true
        chmod 640 "$PASSWD"
    else
        chmod 600 "$PASSWD"
    fi
    chmod 644 "$ROLEFILE"
}

[[ -f $PASSWD ]] || (umask 077 && : >"$PASSWD")
[[ -f $ROLEFILE ]] || printf '# icefarm roles: "user role" per line (see broker/SECURITY.md)\n' >"$ROLEFILE"

# Rewrites the roles file without USER (atomically), then appends "USER ROLE".
set_role() {
    local tmp
    tmp=$(mktemp "$ROLEFILE.XXXXXX")
    awk -v u="$USER_NAME" '$1 != u' "$ROLEFILE" >"$tmp"
    [[ -z ${1:-} ]] || printf '%s %s\n' "$USER_NAME" "$1" >>"$tmp"
    mv "$tmp" "$ROLEFILE"
}

if ((DELETE)); then
    mosquitto_passwd -D "$PASSWD" "$USER_NAME" >/dev/null 2>&1 || true
    set_role ""
    fix_modes
    echo "add-user.sh: removed $USER_NAME; send SIGHUP to the broker to apply" >&2
    exit 0
fi

if ((FROM_STDIN == 2)); then
    PW=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    printf '%s\n%s\n' "$PW" "$PW" | mosquitto_passwd "$PASSWD" "$USER_NAME" >/dev/null
    printf '%s\n' "$PW"
    unset PW
elif ((FROM_STDIN)); then
    IFS= read -r PW || true
    [[ -n ${PW:-} ]] || { echo "add-user.sh: empty password on stdin" >&2; exit 2; }
    printf '%s\n%s\n' "$PW" "$PW" | mosquitto_passwd "$PASSWD" "$USER_NAME" >/dev/null
    unset PW
else
    [[ -t 0 ]] || { echo "add-user.sh: no terminal to ask for the password; use --password-stdin" >&2; exit 2; }
    mosquitto_passwd "$PASSWD" "$USER_NAME"
fi
set_role "$ROLE"
fix_modes
echo "add-user.sh: $USER_NAME is a $ROLE; send SIGHUP to the broker to apply" >&2
