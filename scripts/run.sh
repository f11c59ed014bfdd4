#!/usr/bin/env bash
# `make run`: the whole service on a laptop in one command. Creates .venv on a fresh clone, reinstalls the
# project when pyproject.toml changed since the last install, then hands over to `newsletter dev`
# (migrate, embedded Redis, web, worker, beat). Arguments go to `newsletter dev`: make run ARGS="--port 8001"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv
exec .venv/bin/newsletter dev "$@"
