#!/usr/bin/env bash
# serve.sh -- install what is missing, build warmpool, and run it on its embedded
# default: 127.0.0.1:8080, database ./data/warmpool.db. Extra arguments are passed
# to warmpool (e.g. scripts/serve.sh --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake --preset serve >/dev/null
cmake --build --preset serve -j"$(nproc)"
exec build/serve/warmpool "$@"
