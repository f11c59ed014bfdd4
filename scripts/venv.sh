#!/usr/bin/env bash
# Create or refresh the project's .venv. Sourced by scripts/run.sh and scripts/test.sh; also runnable:
#   bash scripts/venv.sh          # the project alone           (pip install -e .)
#   bash scripts/venv.sh test     # with the test tools          (pip install -e '.[test]')
# pip runs only when pyproject.toml (or the interpreter) changed since the last install: a stamp per extra
# lives in .venv/.installed-<extra>, holding a hash of both. An install with extras also satisfies the plain one.

# The interpreter for a new .venv: python3.11, else python3 when it is 3.11 or newer.
newsletter_find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "no Python 3.11 or newer found (looked for python3.11 and python3)" >&2
    return 1
}

# What an install depends on: pyproject.toml and the venv's interpreter version.
newsletter_install_hash() {
    local root=$1
    {
        cat "$root/pyproject.toml"
        "$root/.venv/bin/python" -c 'import sys; print(sys.version)'
    } | if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi | cut -d' ' -f1
}

# ensure_venv [EXTRA]: make .venv usable with the project installed editable (with EXTRA, e.g. "test").
ensure_venv() {
    local extra=${1:-} root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local venv=$root/.venv python
    if ! { [[ -x $venv/bin/python ]] &&
        "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }; then
        python=$(newsletter_find_python) || return 1
        echo "creating .venv with $python ($("$python" --version 2>&1))"
        "$python" -m venv --clear "$venv" || return 1
    fi
    local hash stamp=$venv/.installed-${extra:-base} spec=.
    hash=$(newsletter_install_hash "$root") || return 1
    [[ -n $extra ]] && spec=".[$extra]"
    if [[ -f $stamp && $(<"$stamp") == "$hash" ]]; then
        return 0
    fi
    if [[ -z $extra ]]; then # an install with any extra also installed the project itself
        local other
        for other in "$venv"/.installed-*; do
            [[ -f $other && $(<"$other") == "$hash" ]] && return 0
        done
    fi
    echo "installing $spec into .venv (pyproject.toml changed or first run)"
    # One install at a time when `make run` and `make test` start together.
    exec {lock_fd}>"$venv/.install-lock"
    command -v flock >/dev/null 2>&1 && flock "$lock_fd"
    if [[ -f $stamp && $(<"$stamp") == "$hash" ]]; then # the other one just did it
        exec {lock_fd}>&-
        return 0
    fi
    rm -f "$venv"/.installed-*
    if ! (cd "$root" && "$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check \
        --editable "$spec"); then
        exec {lock_fd}>&-
        echo "pip install -e '$spec' failed" >&2
        return 1
    fi
    echo "$hash" >"$stamp"
    [[ -n $extra ]] && echo "$hash" >"$venv/.installed-base"
    exec {lock_fd}>&-
    return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    ensure_venv "${1:-}"
fi
