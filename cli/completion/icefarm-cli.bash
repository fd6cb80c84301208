# bash completion for icefarm-cli: commands, options, and bitstream files for evaluate.
# Install: cp icefarm-cli.bash /usr/share/bash-completion/completions/icefarm-cli
_icefarm_cli() {
    local cur prev words cword
    _init_completion 2>/dev/null || { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; }
    local commands="status available devices reserve extend end end-all reboot evaluate watch flash"
    local common="--broker --name --user --password --cafile --timeout --json --no-extend --help"
    case $prev in
    --broker | --name | --user | --password | --timeout | --amount | --wait | --duration | --boards | --window | --result-timeout | --args | --serials)
        return ;;
    --cafile) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --kind) COMPREPLY=($(compgen -W "pulsecount variance" -- "$cur")); return ;;
    esac
    local cmd="" w
    for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        [[ " $commands " == *" $w "* ]] && { cmd=$w; break; }
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands $common" -- "$cur"))
        return
    fi
    case $cmd in
    reserve) COMPREPLY=($(compgen -W "--amount --kind --args --wait --duration $common" -- "$cur")) ;;
    evaluate)
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--kind --boards --serials --window --result-timeout $common" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -X '!*.bin' -- "$cur") $(compgen -d -- "$cur"))
        fi ;;
    flash) COMPREPLY=($(compgen -f -X '!*.uf2' -- "$cur") $(compgen -W "--boards --kind $common" -- "$cur")) ;;
    extend) COMPREPLY=($(compgen -W "--duration $common" -- "$cur")) ;;
    available | devices) COMPREPLY=($(compgen -W "--kind $common" -- "$cur")) ;;
    *) COMPREPLY=($(compgen -W "$common" -- "$cur")) ;;
    esac
}
complete -F _icefarm_cli icefarm-cli
