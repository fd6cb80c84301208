#!/usr/bin/env bash
# Ctrl-C through a real terminal: `./icefarm up` runs in a tmux pane (a real pty,
# its own session, the farm in the terminal's foreground process group), the test
# types Ctrl-C, and every process of that session but the pane's own shell must be
# gone: the terminal delivers SIGINT to the broker, control and the worker at the
# same time as to the script, which is not what a `kill -INT` of the script does.
#   FARM_BIN=BUILD_DIR ctrl_c.sh
set -euo pipefail
command -v tmux >/dev/null || { echo "skip: tmux is not installed (./icefarm test installs it)"; exit 77; }
# shellcheck source=frontdoor.sh
source "$(dirname "$0")/frontdoor.sh"
TMUX_SOCK=$RUN/tmux.sock
tm() { tmux -S "$TMUX_SOCK" "$@"; }
stop_tmux() {
    tm kill-server 2>/dev/null || true
    fd_cleanup
}
trap stop_tmux EXIT

screen() { tm capture-pane -p -J -S -200 -t fd 2>/dev/null; }
# on_screen REGEX: the pane shows a line matching REGEX.
on_screen() { screen | grep -qE "$1"; }

# The pane's shell runs up, then prints its status and stays (so the pane survives).
tm new-session -d -s fd -x 220 -y 50 \
    "cd '$ROOT' && ./icefarm up --boards 2; echo \"EXITED rc=\$?\"; exec sleep 600"
PANE=$(tm display-message -p -t fd '#{pane_pid}')
echo "# tmux pane pid $PANE"

if wait_until 600 on_screen '^Ctrl-C stops everything'; then
    ok "./icefarm up in a terminal comes up"
else
    not_ok "./icefarm up in a terminal comes up"
    screen
    exit 1
fi
BROKER=$(screen | sed -n 's/^broker: //p' | head -n 1)
out=$("$BUILD/cli/icefarm-cli" --broker "$BROKER" --timeout 20 --json available 2>&1 || true)
check "the farm in the terminal answers at $BROKER" python3 -c 'import json,sys; sys.exit(0 if "amount" in json.loads(sys.argv[1]) else 1)' "$out"
before=$(pgrep -s "$PANE" | wc -l)
check "the farm's processes run in the terminal's session ($before)" test "$before" -ge 5

tm send-keys -t fd C-c
if wait_until 60 on_screen 'EXITED rc='; then
    ok "Ctrl-C stops ./icefarm up ($(screen | grep -oE 'EXITED rc=[0-9]+'))"
else
    not_ok "Ctrl-C stops ./icefarm up"
fi
check "  ... with status 130" on_screen 'EXITED rc=130$'
# Only the pane's shell (now `sleep`) may remain in the session.
only_pane() { [[ $(pgrep -s "$PANE") == "$PANE" ]]; }
if wait_until 10 only_pane; then
    ok "  ... no process of the farm is left"
else
    not_ok "  ... no process of the farm is left"
    pgrep -a -s "$PANE" | sed 's/^/#   /'
fi
check "  ... the broker's port is closed" port_closed "$BROKER"
check "  ... its run directory is gone" bash -c "! ls -d '$RUN'/icefarm.* >/dev/null 2>&1"
if ((FAIL)); then screen | tail -n 30 | sed 's/^/# screen: /'; fi

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
