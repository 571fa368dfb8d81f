#!/usr/bin/env bash
# deps.sh -- install the Debian/Ubuntu packages warmpool builds and tests with.
# Installs only what is missing; needs root (or sudo). Usage: scripts/deps.sh [build|test|bench]
set -euo pipefail

BUILD_PKGS=(build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev
            libsqlite3-dev libvectorscan-dev libpq-dev
            libcurl4-openssl-dev libssl-dev)     # completion callbacks: libcurl, HMAC
# python3-jsonschema: tests/contract (OpenAPI); chromium, chromium-driver and
# python3-selenium: tests/browser (pages in headless Chromium); prometheus (for promtool)
# and python3-prometheus-client: tests/observe (GET /metrics read by real parsers);
# postgresql-15: the throwaway cluster of the PostgreSQL runs (scripts/pg-cluster.sh;
# Debian's package also creates the `postgres` user the cluster runs as)
TEST_PKGS=(libcmocka-dev libcurl4-openssl-dev curl clang libclang-rt-14-dev valgrind
           python3 nodejs python3-jsonschema chromium chromium-driver python3-selenium
           prometheus python3-prometheus-client postgresql-15)

# bench/run.sh and bench/profile.sh: the load generator, Celery + Redis for the
# comparison, nginx for the HTTP ceiling, gnuplot for the chart, perf for profiles
BENCH_PKGS=(wrk redis-server redis-tools python3-celery python3-redis procps gcc nginx
            gnuplot-nox linux-perf curl)

want=("${BUILD_PKGS[@]}")
[ "${1:-build}" = test ] && want+=("${TEST_PKGS[@]}")
[ "${1:-build}" = bench ] && want+=("${BENCH_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
