#!/bin/bash
# rt_ab.sh: round trip p50/p99 of two binaries, alternating
RT=/work/wt/hot/build/release/bench/rtclient
for rep in 1 2 3 4; do
 for mode in normal full; do
  for side in head skip; do
    d=$(mktemp -d /tmp/rtab.XXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    /tmp/wp-$side --listen 127.0.0.1:$port --db $d/w.db --workers 2 --log-level warn --durability $mode 2>$d/log &
    pid=$!
    for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/readyz && break; sleep 0.05; done
    sleep 0.5
    out=$($RT task 127.0.0.1 $port 2000 100)
    echo "$rep $mode $side $(cut -d' ' -f1-3 /proc/loadavg) $out"
    kill -TERM $pid; wait $pid 2>/dev/null; rm -rf $d
  done
 done
done
