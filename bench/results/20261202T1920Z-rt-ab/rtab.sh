#!/bin/bash
# alternating round-trip A/B: main vs batch, durability $1
mode=$1
RT=/work/wt/batch/build/release/bench/rtclient
for r in 1 2 3 4 5; do
  for side in main batch; do
    if [ $side = main ]; then WP=/work/main/build/release/warmpool; else WP=/work/wt/batch/build/release/warmpool; fi
    d=$(mktemp -d); port=$((20000 + RANDOM % 20000))
    $WP --listen 127.0.0.1:$port --db $d/w.db --log-level warn --workers 2 --durability $mode 2>/dev/null &
    pid=$!
    for i in $(seq 100); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
    $RT task 127.0.0.1 $port 2000 100 > /tmp/rtab-$mode-$side-$r.json
    kill -TERM $pid; wait $pid; rm -rf $d
    python3 -c "import json;j=json.load(open('/tmp/rtab-$mode-$side-$r.json'));print('$mode $side $r', j.get('p50_ms'), j.get('p99_ms'))"
  done
done
