#!/usr/bin/env bash
# `make run`: the whole service on a laptop in one command. Creates .venv on a fresh clone, reinstalls the
# project when pyproject.toml changed since the last install, then runs `newsletter dev` (migrate, embedded
# Redis, web, worker, beat). Arguments go to `newsletter dev`: make run ARGS="--port 8001"
#
# Signals: `newsletter dev` runs in its own session and gets exactly ONE stop signal from here. A Ctrl-C
# reaches this script and make (the terminal's process group), and make forwards SIGTERM to its child, so
# without this the supervisor would see the same stop two or three times.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv

forwarded=""
forward() {
    if [[ -z "$forwarded" ]]; then
        forwarded="$1"
        kill -s "$1" "$child" 2>/dev/null || true
    fi
}
setsid .venv/bin/newsletter dev "$@" &
child=$!
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
# `wait` returns early when a trapped signal arrives; keep waiting until the supervisor has really exited.
while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
done
exit "$status"
