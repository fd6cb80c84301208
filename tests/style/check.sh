#!/usr/bin/env bash
# The house style, checked: every tracked C file is as clang-format (Debian 12's,
# with the top-level .clang-format) would write it, and every shell script passes
# the shellcheck linter. Prints the offending files and what to run.
#   check.sh [clang-format|shellcheck]     (both when no argument is given)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
rc=0

check_format() {
    command -v clang-format >/dev/null || { echo "skip: clang-format not installed (apt install clang-format)"; return 77; }
    local bad=() f
    while IFS= read -r f; do
        clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
    done < <(git ls-files '*.c' '*.h')
    if ((${#bad[@]})); then
        printf 'not formatted: %s\n' "${bad[@]}"
        echo "fix with: clang-format -i ${bad[*]}"
        return 1
    fi
    echo "ok - $(git ls-files '*.c' '*.h' | wc -l) C files formatted"
}

check_shell() {
    command -v shellcheck >/dev/null || { echo "skip: shellcheck not installed (apt install shellcheck)"; return 77; }
    local files
    mapfile -t files < <(git ls-files '*.sh' icefarm .ci/run)
    # Every severity, style notes included. -P SCRIPTDIR: `source` paths are relative to
    # the script, as the scripts write them; -P ROOT: `# shellcheck source=` directives
    # name files from the top of the tree. Two checks are off everywhere, for what the
    # scripts do on purpose: SC2016 (single-quoted programs for bash -c, python3 and jq,
    # whose $ is theirs, not ours) and SC2119 (helpers with an optional argument, such
    # as farm_start_http [LISTEN], called without it).
    if ! shellcheck -x -P SCRIPTDIR -P "$ROOT" -e SC2016,SC2119 "${files[@]}"; then
        echo "shellcheck found problems in the scripts above"
        return 1
    fi
    echo "ok - ${#files[@]} shell scripts pass shellcheck"
}

case ${1:-all} in
clang-format) check_format; rc=$? ;;
shellcheck) check_shell; rc=$? ;;
all) check_format || rc=$?; check_shell || rc=$? ;;
*) echo "usage: $0 [clang-format|shellcheck]" >&2; exit 2 ;;
esac
exit $rc
