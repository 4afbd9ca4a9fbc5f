# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0

# bash completion for clearancectl(1)                        -*- shell-script -*-

_clearancectl_containers()
{
    local d=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/clearance
    [[ -d $d ]] && command ls -1 -- "$d" 2>/dev/null
}

_clearancectl_requests()
{
    # The ID column of "clearancectl pending" (row 1 is the header).
    clearancectl pending 2>/dev/null | awk 'NR > 1 { print $2 }'
}

_clearancectl_hosts()
{
    # Host aliases of ~/.ssh/config.
    [[ -r ~/.ssh/config ]] && awk 'tolower($1) == "host" { for (i = 2; i <= NF; i++) if ($i !~ /[*?]/) print $i }' ~/.ssh/config
}

_clearancectl()
{
    local cur prev words cword
    _init_completion 2>/dev/null || {
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    }

    local commands="watch pending review allow deny status log explain policy bridge help"
    local globals="--host --local --ssh-command --remote-command --nats --nats-credentials --nats-operator"
    local cmd="" i
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --host|--ssh-command|--remote-command|--nats|--nats-credentials|--nats-operator) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done

    if [[ -z $cmd ]]; then
        case $prev in
            --host) COMPREPLY=($(compgen -W "$(_clearancectl_hosts)" -- "$cur")); return ;;
            --ssh-command|--remote-command|--nats|--nats-operator) return ;;
            --nats-credentials) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        esac
        COMPREPLY=($(compgen -W "$commands $globals --help" -- "$cur"))
        return
    fi

    case $prev in
        --container)
            COMPREPLY=($(compgen -W "$(_clearancectl_containers)" -- "$cur"))
            return ;;
        --glob|--socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --for)
            COMPREPLY=($(compgen -W "30s 5m 15m 30m 1h 12h 1d 1w" -- "$cur"))
            return ;;
        --since)
            COMPREPLY=($(compgen -W "10m 1h 1d today yesterday" -- "$cur"))
            return ;;
        --action)
            COMPREPLY=($(compgen -W "allow deny" -- "$cur"))
            return ;;
        --proto)
            COMPREPLY=($(compgen -W "tcp udp" -- "$cur"))
            return ;;
        --lines)
            [[ $cmd == log ]] && return ;;
        --group)
            COMPREPLY=($(compgen -W "name container" -- "$cur"))
            return ;;
        --project|--policy|--write|--runs|--stable)
            return ;;
    esac

    local opts="--help"
    case $cmd in
        watch)   opts+=" --container --glob" ;;
        bridge)  opts+=" --glob" ;;
        pending) opts+=" --container --glob --json" ;;
        review)  opts+=" --container --glob --group --line-mode" ;;
        status)  opts+=" --container --glob --json" ;;
        allow|deny)
            opts+=" --container --glob --for --until-exit --always --any-port"
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_clearancectl_requests)" -- "$cur"))
                return
            fi ;;
        log)     opts+=" --container --since --action --lines --json --journal-dir --export --follow --cursor-file" ;;
        explain)
            opts+=" --proto --json --socket"
            if [[ $cur != -* && ${words[cword-1]} == explain ]]; then
                COMPREPLY=($(compgen -W "$(_clearancectl_containers)" -- "$cur"))
                return
            fi ;;
        policy)
            opts+=" --json --all --socket"
            if [[ " ${words[*]} " == *" propose "* ]]; then
                opts="--help --container --project --policy --since --runs --stable --json --write --replace --socket"
            elif [[ " ${words[*]} " == *" stale "* ]]; then
                opts="--help --since --file --all --json"
            elif [[ $cur != -* ]]; then
                if [[ ${words[cword-1]} == policy ]]; then
                    COMPREPLY=($(compgen -W "show export propose stale" -- "$cur"))
                else
                    COMPREPLY=($(compgen -W "$(_clearancectl_containers)" -- "$cur"))
                fi
                return
            fi ;;
        help)
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _clearancectl clearancectl
