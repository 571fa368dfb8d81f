#!/usr/bin/env bash
# test.sh -- install what is missing, then build and run every test: unit (cmocka)
# and integration (the real binary over HTTP), first in a normal build, then again
# with AddressSanitizer + UndefinedBehaviorSanitizer; the libFuzzer targets run a fixed
# number of iterations in between. The Python exec-kind helper's unit tests run first
# (a few seconds). The contract test (api/openapi.json against the live server and every
# answer the integration tests got), the browser tests (headless Chromium) and the tests of
# /metrics and /v1/events (tests/observe) run in both builds. A throwaway PostgreSQL 15
# cluster (scripts/pg-cluster.sh, stopped at the end, also on failure) serves the
# PostgreSQL runs: the whole integration suite again (integration.pg.*) and the tests of
# many instances on one database (integration.pg.multi) in the release build; the store's
# unit tests on both backends in both builds. Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=$(nproc)

echo "== PostgreSQL: a throwaway cluster for the PostgreSQL runs"
PGDIR=$(mktemp -d /tmp/warmpool-pg.XXXXXX)
stop_pg() {
    scripts/pg-cluster.sh stop "$PGDIR" || true
    rm -rf "$PGDIR"
}
trap stop_pg EXIT
PG_URL=$(scripts/pg-cluster.sh start "$PGDIR")
echo "cluster $PG_URL (data in $PGDIR)"
export WARMPOOL_TEST_PG=$PG_URL WARMPOOL_TEST_PG_REQUIRED=1       # tests/unit/test_store_backends
export WARMPOOL_IT_PG=$PG_URL WARMPOOL_IT_PG_REQUIRED=1           # tests/integration (pg.*)
export WARMPOOL_IT_PG_RESTART="$PWD/scripts/pg-cluster.sh restart $PGDIR"
# a full run must have validated the integration tests' answers (tests/contract)
export WARMPOOL_CONTRACT_REQUIRE_RECORD=1

echo "== Python exec-kind helper (sdk/python): unittest"
PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m unittest discover -s tests/python

echo "== release build: unit + integration + contract + browser tests"
cmake --preset release >/dev/null
cmake --build --preset release -j"$jobs"
ctest --preset release -j"$jobs"

echo "== fuzz build (clang, libFuzzer + ASan/UBSan): a fixed number of runs per target"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j"$jobs"
ctest --preset fuzz

echo "== asan build (AddressSanitizer + UBSan): unit + integration + contract + browser tests"
cmake --preset asan >/dev/null
cmake --build --preset asan -j"$jobs"
ctest --preset asan -j"$jobs"
