#!/usr/bin/env bash
# The one test command: `make test` runs it, and CI runs it through .ci/run.
#
#   venv → lint (ruff check, ruff format --check, mypy) → unit tests → system packages →
#   docker-compose.yml check → services (Redis, PostgreSQL 15, Chromium) → axe-core (npm) →
#   integration tests on SQLite → integration tests on PostgreSQL → end-to-end tests (Chromium, SQLite)
#
# Arguments go to every pytest run:   scripts/test.sh -k digest -x      make test ARGS="-k digest -x"
#   scripts/test.sh --lint-only       the venv and lint stages alone (make lint)
# The integration and e2e tests see NEWSLETTER_TEST_REDIS_URL, NEWSLETTER_TEST_DATABASE_URL (PostgreSQL run
# only), NEWSLETTER_TEST_CHROMIUM and NEWSLETTER_TEST_OUTPUT_DIR (test-output/); services get free loopback
# ports and a temporary folder, and are stopped by process id when this script exits, however it exits.
# A service that cannot be installed or started is named on one line; with CI=true that fails the run,
# otherwise its tests are skipped and the summary lists them. The first failing stage ends the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
# shellcheck source=scripts/services.sh
source scripts/services.sh

LINT_ONLY=""
if [[ ${1:-} == --lint-only ]]; then
    LINT_ONLY=1
    shift
fi
PYTEST_ARGS=("$@")
IS_CI=""
[[ ${CI:-} == true || ${CI:-} == 1 ]] && IS_CI=1

STAGES=()   # "name|seconds|result"
SKIPPED=()  # what did not run, and why
NOTES=()
CURRENT_STAGE=""
STAGE_T0=0
JUNIT_N=0
RUN_T0=$(date +%s%N)

elapsed_since() { # nanoseconds timestamp → "12.3"
    local ns=$(($(date +%s%N) - $1))
    printf '%d.%d' $((ns / 1000000000)) $((ns % 1000000000 / 100000000))
}

stage_begin() {
    CURRENT_STAGE=$1
    STAGE_T0=$(date +%s%N)
    printf '\n======== %s ========\n' "$1"
}

stage_end() {
    STAGES+=("$CURRENT_STAGE|$(elapsed_since "$STAGE_T0")|${1:-ok}")
    CURRENT_STAGE=""
}

# A service or tool that is not to be had: fatal under CI=true, skipped otherwise.
unavailable() {
    local what=$1 why=$2
    echo "UNAVAILABLE: $what: $why"
    if [[ -n $IS_CI ]]; then
        echo "CI=true: $what is required, failing the run"
        exit 1
    fi
    SKIPPED+=("$what: $why")
}

on_exit() {
    local rc=$?
    set +e
    if [[ -n $CURRENT_STAGE ]]; then
        stage_end "FAILED (exit $rc)"
    fi
    # What pytest counted, from the JUnit XML of every run (read before the folder goes).
    local counts="0 0 0"
    if [[ -n $SVC_DIR ]] && compgen -G "$SVC_DIR/junit-*.xml" >/dev/null; then
        counts=$(.venv/bin/python - "$SVC_DIR"/junit-*.xml 2>/dev/null <<'PY' || echo "0 0 0"
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += n - f - e - s
        failed += f + e
        skipped += s
print(passed, failed, skipped)
PY
        )
    fi
    if [[ -n $SVC_DIR ]]; then
        printf '\n======== stop services ========\n'
        local t0
        t0=$(date +%s%N)
        svc_stop_all
        STAGES+=("stop services|$(elapsed_since "$t0")|ok")
    fi
    printf '\n======== summary ========\n'
    local entry name secs result
    for entry in "${STAGES[@]}"; do
        IFS='|' read -r name secs result <<<"$entry"
        printf '  %-52s %6s s  %s\n' "$name" "$secs" "$result"
    done
    for entry in "${NOTES[@]}"; do echo "  note: $entry"; done
    for entry in "${SKIPPED[@]}"; do echo "  SKIPPED $entry"; done
    if ((rc == 0)); then
        echo "test.sh: all stages passed in $(elapsed_since "$RUN_T0") s${SKIPPED:+, with ${#SKIPPED[@]} part(s) skipped (listed above)}"
    else
        echo "test.sh: FAILED (exit $rc) after $(elapsed_since "$RUN_T0") s"
    fi
    if [[ -z $LINT_ONLY ]]; then
        local passed failed skipped
        read -r passed failed skipped <<<"$counts"
        echo "tests: $passed passed, $failed failed, $skipped skipped"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

has_tests() { # a folder with at least one test_*.py or *_test.py
    [[ -d $1 ]] && [[ -n $(find "$1" \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit) ]]
}

# run_pytest DIR [VAR=value...]: pytest on DIR with the extra arguments. A folder with no test file yet is
# a note, not a failure; pytest's "no tests collected" (exit 5) is a failure unless extra arguments
# (-k, a node id, ...) deselected everything in this folder.
run_pytest() {
    local dir=$1 rc=0
    shift
    if ! has_tests "$dir"; then
        echo "$dir: no test files yet (folder missing or empty): nothing to run"
        NOTES+=("$dir has no test files yet: not run")
        return 0
    fi
    JUNIT_N=$((JUNIT_N + 1))
    env "$@" .venv/bin/python -m pytest "$dir" -q -rs --junitxml="$SVC_DIR/junit-$JUNIT_N.xml" \
        "${PYTEST_ARGS[@]}" || rc=$?
    if ((rc == 5)) && ((${#PYTEST_ARGS[@]} > 0)); then
        echo "$dir: no test matched the extra arguments (${PYTEST_ARGS[*]})"
        NOTES+=("$CURRENT_STAGE: no test matched ${PYTEST_ARGS[*]}")
        return 0
    fi
    if ((rc == 5)); then
        echo "$dir has test files but pytest collected no test (exit 5): failing"
    fi
    return "$rc"
}

# ---------------------------------------------------------------------------------------------- stages

stage_begin "venv (pip install -e '.[test]')"
ensure_venv test
stage_end

stage_begin "lint (ruff check, ruff format --check, mypy)"
lint_failed=()
.venv/bin/ruff check . || lint_failed+=("ruff check")
.venv/bin/ruff format --check . || lint_failed+=("ruff format --check (run: make format)")
.venv/bin/mypy || lint_failed+=(mypy)
if ((${#lint_failed[@]})); then
    echo "lint failed: ${lint_failed[*]}"
    false
fi
stage_end
[[ -n $LINT_ONLY ]] && exit 0

stray=$(find tests -maxdepth 1 \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null || true)
[[ -n $stray ]] && NOTES+=("test files directly under tests/ are not run (use tests/unit, tests/integration or tests/e2e): ${stray//$'\n'/ }")

mkdir -p test-output
export NEWSLETTER_TEST_OUTPUT_DIR=$ROOT/test-output
export C_FORCE_ROOT=1 # Celery workers started by the tests may run as root here
unset NEWSLETTER_TEST_DATABASE_URL NEWSLETTER_TEST_REDIS_URL NEWSLETTER_TEST_CHROMIUM NEWSLETTER_TEST_AXE

svc_init # the temporary folder for services, reports and logs; removed at exit

stage_begin "unit tests (tests/unit)"
run_pytest tests/unit
stage_end

stage_begin "system packages (apt-get only when missing)"
mapfile -t missing < <(svc_missing_packages)
if ((${#missing[@]})); then
    svc_apt_install "${missing[@]}" || true # each failure is reported by the stage that needs the package
else
    echo "all present: redis-server, PostgreSQL, chromium, docker-compose"
fi
stage_end

stage_begin "docker-compose.yml (config -q)"
if svc_compose_cmd; then
    echo "${COMPOSE[*]}: $("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n 1)"
    # An empty --env-file: a developer's .env must not fill in the variables being checked.
    : >"$SVC_DIR/empty.env"
    NEWSLETTER_SECRET_KEY=compose-config-check "${COMPOSE[@]}" --env-file "$SVC_DIR/empty.env" \
        -f docker-compose.yml config -q
    if env -u NEWSLETTER_SECRET_KEY "${COMPOSE[@]}" --env-file "$SVC_DIR/empty.env" \
        -f docker-compose.yml config -q >/dev/null 2>&1; then
        echo "docker-compose.yml accepted an unset NEWSLETTER_SECRET_KEY: it must be required"
        false
    fi
    echo "docker-compose.yml is valid (and refuses to start without NEWSLETTER_SECRET_KEY)"
    stage_end
else
    unavailable docker-compose "${SVC_APT_ERROR[docker-compose]:-not installed}; docker-compose.yml not checked"
    stage_end skipped
fi

stage_begin "start services (Redis, PostgreSQL, Chromium)"
if svc_start_redis; then
    export NEWSLETTER_TEST_REDIS_URL=$REDIS_URL
    [[ $REDIS_KIND == Debian* ]] || NOTES+=("Redis: $REDIS_KIND")
else
    unavailable Redis "$SVC_WHY; tests needing Redis skip themselves"
fi
if ! svc_start_postgres; then
    unavailable PostgreSQL "$SVC_WHY; integration tests on PostgreSQL not run"
    PG_URL=""
fi
if svc_find_chromium; then
    export NEWSLETTER_TEST_CHROMIUM=$CHROMIUM
else
    unavailable Chromium "$SVC_WHY; end-to-end tests not run"
fi
stage_end

stage_begin "axe-core for the end-to-end tests (npm ci in tests/e2e)"
# Pinned in tests/e2e/package.json and package-lock.json (npm ci: exactly that version, about a second).
if command -v npm >/dev/null 2>&1 || { svc_apt_install npm && command -v npm >/dev/null 2>&1; }; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || true
fi
if [[ -f tests/e2e/node_modules/axe-core/axe.min.js ]]; then
    export NEWSLETTER_TEST_AXE=$ROOT/tests/e2e/node_modules/axe-core/axe.min.js
    stage_end
else
    unavailable axe-core "npm ci in tests/e2e failed or npm is missing; accessibility checks not run"
    stage_end skipped
fi

stage_begin "integration tests on SQLite (tests/integration)"
run_pytest tests/integration
stage_end

if [[ -n $PG_URL ]]; then
    stage_begin "integration tests on PostgreSQL (tests/integration)"
    run_pytest tests/integration "NEWSLETTER_TEST_DATABASE_URL=$PG_URL"
    stage_end
else
    STAGES+=("integration tests on PostgreSQL|0.0|skipped (no PostgreSQL)")
fi

if [[ -n $PG_URL ]]; then
    # The crash tests start their own PostgreSQL with durable commits (fsync, synchronous_commit
    # on) from PG_BIN: the one above runs with fast, non-durable settings.
    stage_begin "crash-point tests on a durable PostgreSQL (tests/crash)"
    run_pytest tests/crash "PG_BIN=$PG_BIN"
    stage_end
else
    STAGES+=("crash-point tests|0.0|skipped (no PostgreSQL)")
fi

if [[ ! -d tests/e2e ]]; then
    NOTES+=("tests/e2e does not exist yet: no end-to-end tests")
elif [[ -n $CHROMIUM ]]; then
    stage_begin "end-to-end tests with Chromium on SQLite (tests/e2e)"
    run_pytest tests/e2e
    stage_end
else
    STAGES+=("end-to-end tests|0.0|skipped (no Chromium)")
fi
