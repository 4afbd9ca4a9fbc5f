# SPDX-FileCopyrightText: 2026 The clearance authors
# SPDX-License-Identifier: Apache-2.0

# fish completion for clearancectl(1)

function __clearancectl_containers
    set -l dir (set -q XDG_RUNTIME_DIR; and echo $XDG_RUNTIME_DIR; or echo /run/user/(id -u))/clearance
    test -d $dir; and command ls -1 -- $dir 2>/dev/null
end

function __clearancectl_requests
    clearancectl pending 2>/dev/null | awk 'NR > 1 { print $2 }'
end

set -l cmds watch pending review allow deny status log explain policy bridge help

complete -c clearancectl -f
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a watch -d 'Live prompts; answer them from the terminal'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a pending -d 'List requests waiting for a verdict'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a review -d 'Review many pending requests at once'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a allow -d 'Allow a pending request by id'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a deny -d 'Deny a pending request by id'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a status -d 'Hubs, containers, pending requests, counters'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a log -d 'Audit trail from the journal'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a explain -d 'What the firewall does with a destination'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a policy -d 'Show, export or propose a policy'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a bridge -d 'The far side of --host, for ssh to run'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -a help -d 'Help on a command'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l host -x -a '(__fish_print_hostnames)' -d 'Also the hubs of HOST, over ssh'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l local -d 'Only this host'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l ssh-command -x -d 'The ssh to run'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l remote-command -x -d 'clearancectl on the far side'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l nats -x -d 'The fleet through NATS: watch, pending, allow, deny'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l nats-credentials -r -F -d 'NATS credentials file'
complete -c clearancectl -n "not __fish_seen_subcommand_from $cmds" -l nats-operator -x -d 'Your name on the decide subjects'
complete -c clearancectl -n "__fish_seen_subcommand_from help" -a "$cmds"

complete -c clearancectl -l help -d 'Show help'
complete -c clearancectl -n "__fish_seen_subcommand_from watch pending review status allow deny" -l container -x -a '(__clearancectl_containers)' -d 'Only this container'
complete -c clearancectl -n "__fish_seen_subcommand_from watch pending review status allow deny" -l glob -r -d 'Also look for hub sockets matching PATTERN'
complete -c clearancectl -n "__fish_seen_subcommand_from pending status log explain policy" -l json -d 'Print JSON'

complete -c clearancectl -n "__fish_seen_subcommand_from allow deny" -a '(__clearancectl_requests)' -d 'Pending request'
complete -c clearancectl -n "__fish_seen_subcommand_from allow deny" -l for -x -a '30s 5m 15m 30m 1h 12h 1d 1w' -d 'Expire after DURATION'
complete -c clearancectl -n "__fish_seen_subcommand_from allow deny" -l until-exit -d 'Until the container exits'
complete -c clearancectl -n "__fish_seen_subcommand_from allow deny" -l always -d 'Always, and written to the policy'
complete -c clearancectl -n "__fish_seen_subcommand_from allow deny" -l any-port -d 'Every port and protocol of the destination'

complete -c clearancectl -n "__fish_seen_subcommand_from log" -l container -x -d 'Only this container'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l since -x -a '10m 1h 1d today yesterday' -d 'Only records newer than TIME'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l action -x -a 'allow deny' -d 'Only verdicts with this action'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l lines -x -d 'Only the last N records'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l journal-dir -x -a '(__fish_complete_directories)' -d 'Read the journal files in DIR'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l export -d 'Journal export format, for systemd-journal-upload'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l follow -d 'With --export: keep writing new records'
complete -c clearancectl -n "__fish_seen_subcommand_from log" -l cursor-file -r -F -d 'With --export: resume after the cursor in FILE'

complete -c clearancectl -n "__fish_seen_subcommand_from explain" -l proto -x -a 'tcp udp' -d 'Protocol'
complete -c clearancectl -n "__fish_seen_subcommand_from explain policy" -l socket -r -d 'Verdict service socket'
complete -c clearancectl -n "__fish_seen_subcommand_from explain; and test (count (commandline -opc)) -eq 2" -a '(__clearancectl_containers)' -d 'Container'
complete -c clearancectl -n "__fish_seen_subcommand_from policy; and not __fish_seen_subcommand_from show export propose stale" -a 'show export propose stale'
complete -c clearancectl -n "__fish_seen_subcommand_from show export" -a '(__clearancectl_containers)' -d 'Container'
complete -c clearancectl -n "__fish_seen_subcommand_from policy" -l all -d 'Export: include expiring elements'

complete -c clearancectl -n "__fish_seen_subcommand_from review" -l group -x -a 'name container' -d 'Group the requests'
complete -c clearancectl -n "__fish_seen_subcommand_from review" -l line-mode -d 'Numbered commands line by line, even on a terminal'

complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l container -x -a '(__clearancectl_containers)' -d 'Records of this container'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l project -x -d "Records of this project's containers"
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l policy -x -d 'Records of the containers started from this policy'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l since -x -a '10m 1h 1d today yesterday' -d 'Only records newer than TIME'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l runs -x -d 'Only the last N runs'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l stable -x -d 'Only what appeared in every one of the last N runs'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l write -x -d 'Save the proposal as policy NAME'
complete -c clearancectl -n "__fish_seen_subcommand_from propose" -l replace -d 'With --write: replace an existing policy'
complete -c clearancectl -n "__fish_seen_subcommand_from stale" -l since -x -a '1d 7d 30d today yesterday' -d 'Only containers that ended after TIME'
complete -c clearancectl -n "__fish_seen_subcommand_from stale" -l file -r -F -d 'Judge this policy file instead of the installed one'
complete -c clearancectl -n "__fish_seen_subcommand_from stale" -l all -d 'Every entry with what it matched'
complete -c clearancectl -n "__fish_seen_subcommand_from stale" -l json -d 'Print JSON'
