# shellcheck shell=bash
# A private Docker engine for heavy tests (Debian's docker.io), and a Debian base
# image made with debootstrap, both kept outside the clone in a cache directory so
# the next run reuses them.
#
#   engine_cache_dir             prints the cache dir: $ICEFARM_CACHE, else
#                                /var/cache/icefarm if writable, else ~/.cache/icefarm
#   engine_start CACHE           dockerd with --iptables=false --ip-forward=false (the
#                                host's networking is left alone; builds use host
#                                networking), its data-root, exec-root, pidfile and
#                                socket under CACHE/docker; sets DOCKER_HOST
#   engine_stop                  stops that dockerd and removes the bridges it made
#   engine_base_image CACHE TAG PACKAGES...
#                                TAG = Debian (this host's release, from the archive apt
#                                is configured with) made with debootstrap --variant=minbase
#                                with PACKAGES preinstalled, imported with `docker import`;
#                                the root filesystem tarball is cached in CACHE, keyed by
#                                release, mirror and package list
# Needs root (dockerd, debootstrap). Every wait has a deadline and says what it waits for.

ENGINE_PID=""
ENGINE_DIR=""
ENGINE_BRIDGES_BEFORE=""

engine_cache_dir() {
    local d
    if [[ -n ${ICEFARM_CACHE:-} ]]; then
        d=$ICEFARM_CACHE
    elif mkdir -p /var/cache/icefarm 2>/dev/null && [[ -w /var/cache/icefarm ]]; then
        d=/var/cache/icefarm
    else
        d=$HOME/.cache/icefarm
    fi
    mkdir -p "$d" && printf '%s\n' "$d"
}

engine_bridges() { ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | sort; }

engine_start() {
    local cache=$1 i
    ENGINE_DIR=$cache/docker
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
    ENGINE_BRIDGES_BEFORE=$(engine_bridges)
    export DOCKER_HOST=unix://$ENGINE_DIR/docker.sock
    # A stale daemon from a killed run would hold the data-root: stop it first.
    if [[ -s $ENGINE_DIR/docker.pid ]] && kill -0 "$(cat "$ENGINE_DIR/docker.pid")" 2>/dev/null; then
        kill -TERM "$(cat "$ENGINE_DIR/docker.pid")" 2>/dev/null || true
        sleep 2
    fi
    dockerd --iptables=false --ip-forward=false --ip-masq=false \
        --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$ENGINE_DIR/docker.pid" -H "$DOCKER_HOST" \
        >"$ENGINE_DIR/dockerd.log" 2>&1 9>&- &
    ENGINE_PID=$!
    for ((i = 0; i < 300; i++)); do
        /usr/bin/docker version >/dev/null 2>&1 && return 0
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "# dockerd did not answer on $DOCKER_HOST within 60 s; its log:" >&2
    tail -n 20 "$ENGINE_DIR/dockerd.log" >&2
    return 1
}

engine_stop() {
    [[ -n $ENGINE_PID ]] || return 0
    local i b
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=""
    # docker0 and the compose networks' br-* bridges this daemon made.
    for b in $(comm -13 <(printf '%s\n' "$ENGINE_BRIDGES_BEFORE") <(engine_bridges)); do
        [[ $b == docker0 || $b == br-* ]] && ip link delete "$b" 2>/dev/null
    done
    return 0
}

# The mirror and release apt on this host uses for main (e.g. http://deb.debian.org/debian bookworm).
engine_mirror() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
    apt-cache policy 2>/dev/null | awk -v s="$codename/main" '$3 == s && $2 ~ /^(http|https|file):/ {print $2; exit}'
}

engine_base_image() {
    local cache=$1 tag=$2
    shift 2
    local codename mirror key tarball
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mirror=$(engine_mirror)
    [[ -n $mirror ]] || { echo "# no $codename/main in apt's sources (apt-get update first?)" >&2; return 1; }
    key=$(printf '%s\n' "$codename" "$mirror" "$@" | sha256sum | cut -c1-12)
    tarball=$cache/base-$codename-$key.tar
    if /usr/bin/docker image inspect "$tag" >/dev/null 2>&1 &&
        [[ $(/usr/bin/docker image inspect -f '{{index .Config.Labels "org.icefarm.base"}}' "$tag") == "$key" ]]; then
        return 0
    fi
    if [[ ! -s $tarball ]]; then
        echo "# debootstrap $codename from $mirror (cached afterwards in $tarball)"
        local root=$cache/rootfs-$key.tmp
        rm -rf "$root"
        local inc
        inc=$(IFS=,; echo "$*")
        if ! debootstrap --variant=minbase ${inc:+--include="$inc"} "$codename" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
            echo "# debootstrap failed:" >&2
            tail -n 20 "$cache/debootstrap.log" >&2
            rm -rf "$root"
            return 1
        fi
        rm -rf "$root"/var/cache/apt/archives/*.deb
        tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
        # Bases for another package list or mirror are not used again.
        find "$cache" -maxdepth 1 -name "base-$codename-*.tar" ! -name "${tarball##*/}" -delete
        /usr/bin/docker image rm "$tag" >/dev/null 2>&1 || true
    fi
    /usr/bin/docker import -c 'CMD ["/bin/bash"]' -c "LABEL org.icefarm.base=$key" "$tarball" "$tag" >/dev/null
}
