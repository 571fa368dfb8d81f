#!/usr/bin/env bash
# A/B of end-to-end no-op throughput on PostgreSQL (durable cluster), one instance,
# 2 workers, batch mode (bench/run.sh pg's pg_e2e batch, fewer tasks).
set -euo pipefail
ROOT=/work/wt/pgbatch
N=${N:-5000}
OUT=$ROOT/bench/results/pgbatch-ab-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
cd "$OUT"
PGD=$(mktemp -d /tmp/pgb-bench.XXXXXX); chmod 777 "$PGD"
ADMIN=$("$ROOT/scripts/pg-cluster.sh" start "$PGD" durable)
trap '"$ROOT/scripts/pg-cluster.sh" stop "$PGD" >/dev/null 2>&1 || true' EXIT
declare -A BIN=([new]=$ROOT/build/release/warmpool [old]=/tmp/pgb_old/build/release/warmpool)
echo "N=$N cluster durable; old=03f16c0 new=$(git -C $ROOT rev-parse --short HEAD)" > "$OUT/README.txt"
for r in 1 2 3; do
  for v in old new; do
    db=e2e_${v}_$r
    psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    url=http://127.0.0.1:$port
    "${BIN[$v]}" --listen 127.0.0.1:$port --db "${ADMIN%/postgres}/$db" --log-level warn --workers 2 \
        2>>"$OUT/warmpool-$v-$r.log" &
    pid=$!
    python3 $ROOT/bench/wpbench.py wait-ready "$url" --timeout 120
    echo "$v $r load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/loadavg.txt"
    timeout 600 python3 $ROOT/bench/wpbench.py e2e "$url" "$OUT/pg1_${v}_$r.json" --mode batch --n "$N" --per-batch 100 --threads 4 >/dev/null
    kill -TERM $pid; wait $pid || true
    python3 -c "import json,sys; d=json.load(open('$OUT/pg1_${v}_$r.json')); print('$v', $r, round(d['e2e_per_s'],1))" | tee -a "$OUT/summary.txt"
  done
done
echo "$OUT"
