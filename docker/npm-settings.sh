#!/usr/bin/env bash
# Hands this host's npm settings to the image build's dashboard stage (docker/Dockerfile),
# for a host that reaches the npm registry through a TLS-inspecting proxy or a mirror:
# there `npm ci` inside `docker build` fails with SELF_SIGNED_CERT_IN_CHAIN (or reaches
# the wrong registry) though npm on the host works. Run it from anywhere, then build:
#
#   docker/npm-settings.sh && docker-compose -f docker/compose.yml up -d --build
#   docker/npm-settings.sh --clean      # forget them again
#
# It writes docker/build-npm/ (git ignores it): ca.pem, the certificates the host's npm
# trusts beyond node's own (its `cafile` and $NODE_EXTRA_CA_CERTS), and npmrc, its
# registry and proxies when they are set. Only the dashboard build stage reads them;
# the image that runs has neither. Without npm on the host it copies what the
# environment names: NODE_EXTRA_CA_CERTS, NPM_CONFIG_CAFILE, NPM_CONFIG_REGISTRY.
# A lab that reaches the registry directly needs none of this.
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)/build-npm

if [[ ${1:-} == --clean ]]; then
    rm -rf "$OUT"
    exit 0
fi
[[ $# == 0 ]] || { echo "usage: $0 [--clean]" >&2; exit 2; }

# npm config get KEY, or "" where npm is absent or the key unset.
npm_get() {
    local v=""
    if command -v npm >/dev/null; then
        v=$(npm config get "$1" 2>/dev/null) || v=""
    fi
    [[ $v == null || $v == undefined ]] && v=""
    printf '%s' "$v"
}

cafiles=()
for f in "$(npm_get cafile)" "${NPM_CONFIG_CAFILE:-}" "${NODE_EXTRA_CA_CERTS:-}"; do
    [[ -n $f ]] || continue
    [[ -r $f ]] || { echo "npm-settings: $f (a CA file npm is told to use) is not readable" >&2; exit 1; }
    [[ " ${cafiles[*]} " == *" $f "* ]] || cafiles+=("$f")
done
registry=$(npm_get registry)
registry=${registry:-${NPM_CONFIG_REGISTRY:-}}
[[ $registry == https://registry.npmjs.org/ ]] && registry="" # npm's default

rm -rf "$OUT"
mkdir -p "$OUT"
if ((${#cafiles[@]})); then
    cat "${cafiles[@]}" >"$OUT/ca.pem"
    echo "npm-settings: $OUT/ca.pem: the CA certificates of ${cafiles[*]}"
fi
{
    [[ -z $registry ]] || echo "registry=$registry"
    for key in proxy https-proxy noproxy strict-ssl; do
        v=$(npm_get "$key")
        [[ -z $v || ($key == strict-ssl && $v == true) ]] || echo "$key=$v"
    done
} >"$OUT/npmrc"
if [[ -s $OUT/npmrc ]]; then
    chmod 600 "$OUT/npmrc" # a proxy URL may carry a password
    echo "npm-settings: $OUT/npmrc: $(cut -d= -f1 "$OUT/npmrc" | paste -sd' ')"
else
    rm -f "$OUT/npmrc"
fi
if [[ ! -e $OUT/ca.pem && ! -e $OUT/npmrc ]]; then
    rmdir "$OUT"
    echo "npm-settings: this host's npm uses its defaults: the build needs nothing from it"
fi
