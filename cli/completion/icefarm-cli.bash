# bash completion for icefarm-cli: commands, each command's own options (the
# same lists as cli/main.c's table), bitstream and UF2 files, kinds, and board
# serials from the farm itself (a bounded `status`, so completion never hangs).
# Install: cp icefarm-cli.bash /usr/share/bash-completion/completions/icefarm-cli
# shellcheck disable=SC2034,SC2207 # _init_completion sets words/cword; compgen output is split on purpose
_icefarm_cli_serials() {
    # Every serial the farm knows; honours the broker options already typed.
    local args=() i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --broker | --user | --password-file | --cafile | --name) args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
        esac
    done
    icefarm-cli "${args[@]}" --timeout 2 --json status 2>/dev/null | grep -o '"serial":"[^"]*"' | cut -d'"' -f4 | sort -u
}

_icefarm_cli() {
    local cur prev words cword
    _init_completion 2>/dev/null || {
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
    }
    local commands="status who available devices reserve extend end end-all reboot evaluate flash watch sub"
    local common="--broker --name --user --password-file --password --cafile --timeout --json --help"
    case $prev in
    --broker | --name | --user | --password | --timeout | --amount | --wait | --duration | --boards | --window | \
        --result-timeout | --flash-timeout | --args)
        return
        ;;
    --cafile | --password-file)
        COMPREPLY=($(compgen -f -- "$cur"))
        return
        ;;
    --kind)
        COMPREPLY=($(compgen -W "pulsecount variance" -- "$cur"))
        return
        ;;
    --serials)
        COMPREPLY=($(compgen -W "$(_icefarm_cli_serials)" -- "${cur##*,}"))
        return
        ;;
    esac
    local cmd="" w
    for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        [[ " $commands " == *" $w "* ]] && {
            cmd=$w
            break
        }
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands $common --version" -- "$cur"))
        return
    fi
    local own=""
    case $cmd in
    available | devices) own="--kind" ;;
    reserve) own="--amount --kind --args --wait --duration --no-extend" ;;
    extend) own="--duration --set" ;;
    evaluate) own="--kind --boards --serials --wait --window --result-timeout --ndjson --no-check --no-extend" ;;
    flash) own="--boards --kind --wait --no-extend --flash-timeout" ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$own $common" -- "$cur"))
        return
    fi
    case $cmd in
    evaluate) COMPREPLY=($(compgen -f -X '!*.bin' -- "$cur") $(compgen -d -- "$cur")) ;;
    flash) COMPREPLY=($(compgen -f -X '!*.uf2' -- "$cur") $(compgen -d -- "$cur")) ;;
    reserve | extend | end | reboot | watch) COMPREPLY=($(compgen -W "$(_icefarm_cli_serials)" -- "$cur")) ;;
    sub) COMPREPLY=($(compgen -W "icefarm/# icefarm/+/state icefarm/+/event icefarm/farm/available icefarm/lease/+ icefarm/worker/+/state icefarm/ctl/state" -- "$cur")) ;;
    esac
}
complete -F _icefarm_cli icefarm-cli
