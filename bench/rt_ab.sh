#!/usr/bin/env bash
# rt_ab.sh -- round trips of two or more warmpool binaries, taking turns.
# Usage: bench/rt_ab.sh OUTDIR MODE REPS NAME=BINARY [NAME=BINARY ...]
#   MODE: full | normal (--durability); REPS: alternations; each run is a fresh
#   service and database with 2 workers, 2,000 round trips of POST ?wait (bench/rtclient,
#   100 unmeasured first). Writes OUTDIR/rt-MODE-NAME-R.json (rtclient's figures plus
#   the WAL's largest size, sampled every 20 ms) and prints a line per run.
set -euo pipefail
out=$1 mode=$2 reps=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
RT=${WP_RTCLIENT:-$here/build/release/bench/rtclient}
N=${WP_RT_N:-2000}
mkdir -p "$out"
for r in $(seq "$reps"); do
    for pair in "$@"; do
        name=${pair%%=*} bin=${pair#*=}
        d=$(mktemp -d)
        port=$((20000 + RANDOM % 20000))
        "$bin" --listen 127.0.0.1:$port --db "$d/w.db" --log-level warn --workers 2 \
            --durability "$mode" 2>/dev/null &
        pid=$!
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
        ( big=0; while kill -0 $pid 2>/dev/null; do
              s=$(stat -c %s "$d/w.db-wal" 2>/dev/null || echo 0)
              [ "$s" -gt "$big" ] && big=$s && echo "$big" > "$d/walmax"
              sleep 0.02; done ) &
        sampler=$!
        timeout 120 "$RT" task 127.0.0.1 $port "$N" 100 > "$d/rt.json"
        kill -TERM $pid; wait $pid || true
        wait $sampler 2>/dev/null || true
        f="$out/rt-$mode-$name-$r.json"
        python3 - "$d/rt.json" "$(cat "$d/walmax" 2>/dev/null || echo 0)" "$f" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["wal_max_bytes"] = int(sys.argv[2])
json.dump(j, open(sys.argv[3], "w"))
PY
        python3 -c "import json,sys;j=json.load(open('$f'));print('$mode $name $r p50 %.3f p99 %.3f p999 %.3f max %.1f wal %.1f MB'%(j['p50_ms'],j['p99_ms'],j['p999_ms'],j['max_ms'],j['wal_max_bytes']/2**20))"
        rm -rf "$d"
    done
done
