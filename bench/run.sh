#!/usr/bin/env bash
# bench/run.sh -- warmpool's benchmark suite, one command.
#
#   bench/run.sh                  every benchmark
#   bench/run.sh throughput       one of: throughput | hot | sharing | preload | wal | exec | scale | pg
#   bench/run.sh ab REV [REV...]  the working tree against git revisions: no-op tasks
#                                 end to end (wrk and batch), all of them taking turns
#
# `scale` (not part of `all`: it takes about 7 minutes and 5 GB of disk) fills
# databases of 10^4, 10^6 and 10^7 finished tasks and measures what must not grow
# with them; see _bench_scale below. `pg` (not part of `all` either, about 10 minutes)
# measures the PostgreSQL backend against SQLite on this machine, with one and with two
# instances, and a task's cost to the database; see _bench_pg below.
#
# `hot` (part of `all`) is the hot path of issue 12: nginx's `return 200` ceiling under
# the same wrk line, warmpool with --durability full and normal, one client's round trip,
# idle CPU, and a chart (hot/throughput.png); see _bench_hot below. bench/profile.sh
# (separate: perf) profiles the same load.
#
# Installs what is missing (Debian packages only, through scripts/deps.sh bench: the
# build dependencies, then wrk, redis-server, python3-celery, python3-redis, nginx,
# gnuplot-nox, linux-perf), builds the
# release preset and bench/naive_scan.c, runs the benchmarks on loopback only, writes raw
# results to bench/results/<UTC timestamp>/ (tool outputs, one JSON per measurement,
# summary.json) and prints a summary table. Generated data (the 20,000-rule file, the
# texts) and the databases live in a temporary folder, removed at the end.
#
# Knobs (environment): WP_BENCH_REPS (3), WP_BENCH_TP_N (20000 warmpool/PPE tasks),
# WP_BENCH_HOT_SECONDS (10: nginx's wrk run), WP_BENCH_RT_N (2000 round trips),
# WP_BENCH_CELERY_N (5000), WP_BENCH_SCAN_N (2000), WP_BENCH_NAIVE_N (40),
# WP_BENCH_EXEC_MB (256), WP_BENCH_EXEC_ENTRIES (1000000), WP_BENCH_EXEC_N (TP_N),
# WP_BENCH_FLAGS (more warmpool flags for throughput and ab, e.g. "--durability normal"),
# WP_BENCH_KEEP_WORK=1 keeps the temporary folder. scale: WP_BENCH_SCALE_SIZES
# ("10000 1000000 10000000"), WP_BENCH_SCALE_MIGRATE_N (10000000), WP_BENCH_SCALE_LOAD_S
# (20), WP_BENCH_SCALE_DIR (the temporary folder: the databases go there).
# Every load loop is bounded in count and in time (wrk -d60s, timeout(1) on each client).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in bench/
WHAT=${1:-all}
case $WHAT in all | throughput | hot | sharing | preload | wal | exec | scale | pg) ;;
ab)
    [ $# -ge 2 ] || {
        echo "usage: $0 ab REV [REV...]   (the working tree against git revisions)" >&2
        exit 2
    }
    AB_REVS=()
    for rev in "${@:2}"; do
        AB_REVS+=("$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --verify -q "$rev^{commit}")") || {
            echo "$0: not a git revision: $rev" >&2
            exit 2
        }
    done
    ;;
*)
    echo "usage: $0 [all|throughput|hot|sharing|preload|wal|exec|scale|pg] | $0 ab REV [REV...]" >&2
    exit 2
    ;;
esac
REPS=${WP_BENCH_REPS:-3}
TP_N=${WP_BENCH_TP_N:-20000}
CELERY_N=${WP_BENCH_CELERY_N:-5000}
SCAN_N=${WP_BENCH_SCAN_N:-2000}
NAIVE_N=${WP_BENCH_NAIVE_N:-40}

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- dependencies
install_deps() {
    # the Debian packages of redis and nginx start a server (6379, 80) when installed; this
    # suite runs its own on other ports, so it stops the ones it has just installed
    local fresh=() sudo="" svc
    for svc in redis-server nginx; do
        dpkg-query -W -f='${Status}' "$svc" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$svc")
    done
    "$ROOT/scripts/deps.sh" bench      # the build's packages and the benchmarks' (BENCH_PKGS)
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    for svc in "${fresh[@]}"; do
        if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
            $sudo systemctl stop "$svc" || true
        fi
    done
}

# ---------------------------------------------------------------- state, clean-up
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP
WORK=$(mktemp -d /tmp/warmpool-bench.XXXXXX)
WP=$ROOT/build/release/warmpool
LOOKUP_SO=$ROOT/build/release/examples/liblookup.so
WP_PID="" WP_PID2="" CELERY_PGID="" REDIS_PID="" REDIS_PORT="" PG_DIR=""

stop_warmpool() {
    if [ -n "$WP_PID2" ]; then
        kill -TERM "$WP_PID2" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$WP_PID2" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$WP_PID2" 2>/dev/null || true
        wait "$WP_PID2" 2>/dev/null || true
        WP_PID2=""
    fi
    [ -n "$WP_PID" ] || return 0
    kill -TERM "$WP_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$WP_PID" 2>/dev/null || true
    wait "$WP_PID" 2>/dev/null || true
    WP_PID=""
}
stop_celery() {
    if [ -n "$CELERY_PGID" ]; then # its own process group (setsid): the worker and its pool
        kill -TERM -- "-$CELERY_PGID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$CELERY_PGID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$CELERY_PGID" 2>/dev/null || true
        wait "$CELERY_PGID" 2>/dev/null || true
        CELERY_PGID=""
    fi
    if [ -n "$REDIS_PID" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
}
stop_pg() {
    [ -n "$PG_DIR" ] || return 0
    "$ROOT/scripts/pg-cluster.sh" stop "$PG_DIR" || true
    rm -rf "$PG_DIR"
    PG_DIR=""
}
cleanup() {
    stop_warmpool
    stop_nginx
    stop_celery
    stop_pg
    if [ "${WP_BENCH_KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run CMD...: records the command in commands.txt, then runs it
run() {
    printf '%s\n' "$*" >>"$OUT/commands.txt"
    "$@"
}

# start_warmpool NAME [flags...]: fresh database, waits for /readyz; sets WP_PID, URL
start_warmpool() {
    local name=$1
    shift
    mkdir -p "$WORK/$name"
    start_warmpool_on "$WORK/$name/w.db" "$name" "$@"
}

# start_warmpool_on DB NAME [flags...]: the same on the database DB (--log-level warn
# unless the flags say otherwise)
start_warmpool_on() {
    local db=$1 name=$2
    shift 2
    local port
    port=$(free_port)
    URL=http://127.0.0.1:$port
    printf '%s\n' "warmpool --listen 127.0.0.1:$port --db $db --log-level warn $*" >>"$OUT/commands.txt"
    "$WP" --listen "127.0.0.1:$port" --db "$db" --log-level warn "$@" \
        2>>"$OUT/warmpool-$name.log" &
    WP_PID=$!
    if ! $PY "$BENCH/wpbench.py" wait-ready "$URL" --timeout 120 2>>"$OUT/warmpool-$name.log"; then
        stop_warmpool
        log "warmpool ($name) did not start; its log:"
        tail -5 "$OUT/warmpool-$name.log" >&2
        return 1
    fi
}
die() { log "$*"; exit 1; }

WPB() { run timeout 600 $PY "$BENCH/wpbench.py" "$@"; }

# ---------------------------------------------------------------- throughput
# warmpool_e2e NAME WRK_JSON BATCH_JSON: the two end-to-end runs of no-op tasks against
# $WP, each on a fresh service and database: one task per POST with wrk, then batches
# of 100
warmpool_e2e() {
    local name=$1 wrk_json=$2 batch_json=$3 flags
    read -r -a flags <<<"${WP_BENCH_FLAGS:-}"
    start_warmpool "$name-wrk" --workers 2 "${flags[@]}" || die "cannot start warmpool ($name)"
    WPB e2e "$URL" "$wrk_json" --mode wrk --n "$TP_N" \
        --wrk-script "$BENCH/submit.lua" --wrk-threads 2 --wrk-conns 32 --wrk-seconds 60 >/dev/null
    stop_warmpool
    start_warmpool "$name-batch" --workers 2 "${flags[@]}" || die "cannot start warmpool ($name)"
    WPB e2e "$URL" "$batch_json" --mode batch --n "$TP_N" \
        --per-batch 100 --threads 4 >/dev/null
    stop_warmpool
}

_bench_throughput() {
    local d=$OUT/throughput
    mkdir -p "$d"
    log "throughput: warmpool (wrk and batch), ProcessPoolExecutor; $REPS repetitions"
    for r in $(seq "$REPS"); do
        warmpool_e2e "tp-$r" "$d/warmpool_wrk_$r.json" "$d/warmpool_batch_$r.json"
        run timeout 300 $PY "$BENCH/ppe_bench.py" throughput "$TP_N" "$d/ppe_$r.json" >/dev/null
    done

    log "throughput: Celery prefork (2) + Redis; $REPS repetitions of $CELERY_N tasks"
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis"
    echo "redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir DIR" >>"$OUT/commands.txt"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/redis" --logfile "$d/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    export WP_BENCH_REDIS=redis://127.0.0.1:$REDIS_PORT/0
    (cd "$BENCH" && exec setsid $PY -m celery -A celery_tasks worker --concurrency 2 -P prefork \
        -l warning --without-gossip --without-mingle --without-heartbeat >"$d/celery-worker.log" 2>&1) &
    CELERY_PGID=$!
    sleep 0.2
    local pg
    pg=$(ps -o pgid= -p "$CELERY_PGID" | tr -d ' ')
    [ "$pg" = "$CELERY_PGID" ] || die "celery worker is not its own process group ($pg)"
    echo "(cd bench && WP_BENCH_REDIS=$WP_BENCH_REDIS $PY -m celery -A celery_tasks worker --concurrency 2 -P prefork -l warning --without-gossip --without-mingle --without-heartbeat)" >>"$OUT/commands.txt"
    for r in $(seq "$REPS"); do
        (cd "$BENCH" && run timeout 300 $PY celery_tasks.py "$CELERY_N" "$d/celery_$r.json" >/dev/null)
    done
    stop_celery
}

# ---------------------------------------------------------------- hot
# The hot path (issue 12), in one run, both --durability modes: nginx's `return 200`
# under the same wrk line (-t2 -c32) as warmpool's one-task-per-POST (the HTTP ceiling of
# this machine); warmpool end to end, one task per POST (wrk) and batches of 100; PPE(2)
# in process; one client's round trip (POST ?wait, bench/rtclient.c, WP_BENCH_RT_N tasks
# after 100 unmeasured) and the same client against nginx (the floor of a round trip);
# the CPU an idle warmpool (2 workers) uses over 10 s (/proc of all its processes); a
# chart of throughput per system (hot/throughput.png, bench/hot_summary.py).
NGINX_PID=""
stop_nginx() {
    [ -n "$NGINX_PID" ] || return 0
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
}

start_nginx() { # sets NGINX_PORT
    local d=$WORK/nginx
    NGINX_PORT=$(free_port)
    mkdir -p "$d/tmp"
    # as many worker processes as warmpool has HTTP threads (2); no logging
    cat >"$d/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;     # one connection for all the round trips (default 1000)
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok\n"; }
    }
}
NGX
    cp "$d/nginx.conf" "$OUT/hot/nginx.conf"
    echo "nginx -c hot/nginx.conf -p DIR -e DIR/error.log" >>"$OUT/commands.txt"
    nginx -c "$d/nginx.conf" -p "$d" -e "$d/error.log" &
    NGINX_PID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && return 0
        sleep 0.1
    done
    die "nginx did not start: $(tail -3 "$d/error.log" 2>/dev/null)"
}

_bench_hot() {
    local d=$OUT/hot secs=${WP_BENCH_HOT_SECONDS:-10} rt_n=${WP_BENCH_RT_N:-2000} r mode port
    mkdir -p "$d"
    local rt=$ROOT/build/release/bench/rtclient
    log "hot: nginx return 200, wrk -t2 -c32 -d${secs}s; $REPS repetitions"
    start_nginx
    for r in $(seq "$REPS"); do
        run timeout $((secs + 30)) wrk -t2 -c32 -d"${secs}s" --latency \
            "http://127.0.0.1:$NGINX_PORT/" >"$d/nginx_$r.wrk.txt" 2>&1 || true
    done
    log "hot: round trip of one client to nginx (the floor), $rt_n requests"
    run "$rt" plain 127.0.0.1 "$NGINX_PORT" "$rt_n" 100 >"$d/rt_nginx.json"
    stop_nginx
    for mode in full normal; do
        log "hot: warmpool --durability $mode: end to end (wrk and batch), $REPS repetitions of $TP_N"
        for r in $(seq "$REPS"); do
            start_warmpool "hot-$mode-wrk-$r" --workers 2 --durability "$mode" ||
                die "cannot start warmpool"
            WPB e2e "$URL" "$d/${mode}_wrk_$r.json" --mode wrk --n "$TP_N" \
                --wrk-script "$BENCH/submit.lua" --wrk-threads 2 --wrk-conns 32 --wrk-seconds 60 >/dev/null
            stop_warmpool
            start_warmpool "hot-$mode-batch-$r" --workers 2 --durability "$mode" ||
                die "cannot start warmpool"
            WPB e2e "$URL" "$d/${mode}_batch_$r.json" --mode batch --n "$TP_N" \
                --per-batch 100 --threads 4 >/dev/null
            stop_warmpool
        done
        log "hot: warmpool --durability $mode: round trip (POST ?wait), $rt_n tasks"
        start_warmpool "hot-$mode-rt" --workers 2 --durability "$mode" || die "cannot start warmpool"
        port=${URL##*:}
        run "$rt" task 127.0.0.1 "$port" "$rt_n" 100 >"$d/rt_$mode.json"
        stop_warmpool
    done
    log "hot: idle CPU of warmpool (2 workers), 10 s"
    start_warmpool hot-idle --workers 2 || die "cannot start warmpool"
    sleep 2                             # past the start
    WPB idle-cpu "$WP_PID" "$d/idle_cpu.json" --seconds 10 >/dev/null
    stop_warmpool
    if [ ! -e "$OUT/throughput/ppe_1.json" ]; then
        log "hot: ProcessPoolExecutor(2), $REPS repetitions of $TP_N"
        for r in $(seq "$REPS"); do
            run timeout 300 $PY "$BENCH/ppe_bench.py" throughput "$TP_N" "$d/ppe_$r.json" >/dev/null
        done
    fi
    $PY "$BENCH/hot_summary.py" "$d"
}

# ---------------------------------------------------------------- sharing
_bench_sharing() {
    local d=$OUT/sharing
    mkdir -p "$d"
    log "sharing: warmpool lookup kind, 256 MiB context, 4 workers"
    start_warmpool sharing --workers 4 --plugin "$LOOKUP_SO" --kind-config lookup=mb=256 ||
        die "cannot start warmpool with the lookup plugin"
    WPB sharing "$URL" "$d/warmpool.json" --supervisor "$WP_PID" --of 64 >/dev/null
    stop_warmpool
    log "sharing: ProcessPoolExecutor(4), 256 MiB array('Q') per worker (initializer), then inherited"
    run timeout 300 $PY "$BENCH/ppe_bench.py" sharing 256 "$d/ppe.json" init >/dev/null
    run timeout 300 $PY "$BENCH/ppe_bench.py" sharing 256 "$d/ppe_inherit.json" inherit >/dev/null
}

# ---------------------------------------------------------------- preload
_bench_preload() {
    local d=$OUT/preload g=$WORK/scan
    mkdir -p "$d"
    log "preload: generating rules (default + 20,000 indicators) and $SCAN_N texts"
    run $PY "$BENCH/gen_scan_data.py" "$ROOT/rules/default.rules" "$g" --iocs 20000 --texts "$SCAN_N" --bytes 4096
    run gcc -O2 -Wall -Wextra -o "$WORK/naive_scan" "$BENCH/naive_scan.c" -lhs
    $PY - "$g/bench.rules" "$d/rules.json" <<'EOF'
import hashlib, json, sys
data = open(sys.argv[1], "rb").read()
rules = [l for l in data.decode().splitlines() if l.strip() and not l.lstrip().startswith("#")]
json.dump({"rules": len(rules), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
          open(sys.argv[2], "w"), indent=1)
EOF
    for r in $(seq "$REPS"); do
        if ! start_warmpool "preload-$r" --workers 2 --scan-rules "$g/bench.rules" ||
            ! $PY "$BENCH/wpbench.py" wait-ready "$URL" --kind scan --timeout 5; then
            log "preload: this warmpool has no working 'scan' kind; preload skipped"
            printf '{"skipped": "warmpool did not start with --scan-rules, or has no scan kind in /v1/stats (see warmpool-preload-%s.log)"}\n' "$r" >"$d/skipped.json"
            stop_warmpool
            return 0
        fi
        WPB preload "$URL" "$d/warmpool_$r.json" --texts "$g/texts" --n "$SCAN_N" --keep "$NAIVE_N" \
            --per-batch 100 --threads 2 >/dev/null
        stop_warmpool
        [ "$r" = 1 ] && mv "$d/scan_wp" "$WORK/scan_wp"
        rm -rf "$d/scan_wp"
    done
    log "preload: spawn-per-task baseline, $NAIVE_N tasks, 2 at a time; $REPS repetitions"
    for r in $(seq "$REPS"); do
        WPB naive "$d/naive_$r.json" --bin "$WORK/naive_scan" --rules "$g/bench.rules" \
            --texts "$g/texts" --n "$NAIVE_N" --parallel 2 --max-seconds 180 >/dev/null
        if [ "$r" = 1 ]; then mv "$d/scan_naive" "$WORK/scan_naive"; else rm -rf "$d/scan_naive"; fi
    done
    WPB compare "$WORK/scan_wp" "$WORK/scan_naive" "$d/compare.json" >/dev/null
    # keep a few of the result pairs (small) next to the numbers
    mkdir -p "$d/sample"
    for i in 0000 0001 0002; do
        cp "$WORK/scan_wp/$i.json" "$d/sample/warmpool-$i.json" 2>/dev/null || true
        cp "$WORK/scan_naive/$i.json" "$d/sample/naive-$i.json" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- main
T_START=$(date +%s)
install_deps
mkdir -p "$OUT"
log "results: $OUT"
log "building the release preset"
(cd "$ROOT" && cmake --preset release >"$WORK/build.log" 2>&1 &&
    cmake --build --preset release -j2 --target warmpool lookup wp-exec-drive scale_tool store_cost rtclient >>"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log" >&2
    exit 1
}
printf 'cmake --preset release && cmake --build --preset release -j2 --target warmpool lookup wp-exec-drive scale_tool store_cost rtclient\n' >>"$OUT/commands.txt"

# ---------------------------------------------------------------- wal
# The WAL under constant load: submissions (wrk, one task per POST) and workers writing
# results for WP_BENCH_WAL_S seconds, the -wal file's size sampled every second.
_bench_wal() {
    local d=$OUT/wal secs=${WP_BENCH_WAL_S:-120}
    mkdir -p "$d"
    log "wal: ${secs}s of constant submit + run load, WAL size every second"
    start_warmpool wal --workers 2 || die "cannot start warmpool"
    local wal=$WORK/wal/w.db-wal
    (for _ in $(seq $((secs + 5))); do
        printf '%s %s\n' "$(date +%s)" "$(stat -c %s "$wal" 2>/dev/null || echo 0)"
        sleep 1
    done) >"$d/wal_samples.txt" &
    local sampler=$!
    WP_BENCH_N=100000000 run timeout $((secs + 30)) wrk -t2 -c16 -d"${secs}s" \
        -s "$BENCH/submit.lua" "$URL/v1/tasks" >"$d/wrk.txt" 2>&1 || true
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    curl -s "$URL/v1/stats" >"$d/stats.json" || true
    ls -l "$WORK/wal/" >"$d/files.txt" 2>&1 || true
    stop_warmpool
    $PY - "$d" <<'PYEOF'
import json, statistics, sys
d = sys.argv[1]
sizes = [int(l.split()[1]) for l in open(d + "/wal_samples.txt") if l.strip()]
stats = json.load(open(d + "/stats.json")) if open(d + "/stats.json").read().strip() else {}
half = sizes[len(sizes) // 2:]
out = {"samples": len(sizes), "wal_max_bytes": max(sizes or [0]),
       "wal_max_second_half_bytes": max(half or [0]),
       "wal_median_bytes": int(statistics.median(sizes or [0])),
       "wal_last_bytes": sizes[-1] if sizes else 0, "tasks": stats.get("tasks")}
json.dump(out, open(d + "/wal.json", "w"), indent=1)
print(json.dumps(out))
PYEOF
}

# ---------------------------------------------------------------- A/B
# The working tree's build against each revision of AB_REVS, each built in a temporary
# worktree with the same flags; all of them take turns in every repetition, so that the
# machine's noise falls on each alike. Several revisions (say, the merges between an old
# commit and now) break a change in speed down to the commit that made it.
_bench_ab() {
    local d=$OUT/ab rev short sides=() i=0
    mkdir -p "$d"
    for rev in "${AB_REVS[@]}"; do
        i=$((i + 1))
        short=$(git -C "$ROOT" rev-parse --short "$rev")
        log "ab: building $short in a worktree"
        git -C "$ROOT" worktree add -q --detach "$WORK/ab-src-$i" "$rev"
        (cd "$WORK/ab-src-$i" && cmake --preset serve -B "$WORK/ab-build-$i" >"$WORK/ab-build-$i.log" 2>&1 &&
            cmake --build "$WORK/ab-build-$i" -j2 --target warmpool >>"$WORK/ab-build-$i.log" 2>&1) || {
            git -C "$ROOT" worktree remove --force "$WORK/ab-src-$i"
            die "building $short failed: see $WORK/ab-build-$i.log"
        }
        git -C "$ROOT" worktree remove --force "$WORK/ab-src-$i"
        printf 'git worktree add %s; cmake --preset serve; cmake --build ... --target warmpool\n' "$rev" >>"$OUT/commands.txt"
        sides+=("rev$i")
    done
    sides+=(tree)
    local tree_wp=$WP side
    log "ab: ${#AB_REVS[@]} revision(s) and the working tree, $REPS repetitions of wrk and batch"
    for r in $(seq "$REPS"); do
        for side in "${sides[@]}"; do
            if [ "$side" = tree ]; then WP=$tree_wp; else WP=$WORK/ab-build-${side#rev}/warmpool; fi
            warmpool_e2e "ab-$side-$r" "$d/${side}_wrk_$r.json" "$d/${side}_batch_$r.json"
        done
    done
    WP=$tree_wp
    $PY - "$d" "$(git -C "$ROOT" rev-parse HEAD)" "$(git -C "$ROOT" status --porcelain | wc -l)" "${AB_REVS[@]}" <<'PYEOF'
import glob, json, statistics, sys
d, head, dirty, revs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
out = {"revs": revs, "tree_head": head, "tree_dirty_files": dirty}
sides = [f"rev{i + 1}" for i in range(len(revs))] + ["tree"]
names = dict(zip(sides, [r[:9] for r in revs] + ["tree"]))
for mode in ("wrk", "batch"):
    for side in sides:
        rates = [json.load(open(f))["e2e_per_s"] for f in sorted(glob.glob(f"{d}/{side}_{mode}_*.json"))]
        out[f"{side}_{mode}_e2e_per_s"] = rates
        out[f"{side}_{mode}_e2e_median"] = statistics.median(rates)
    for side in sides[:-1]:
        out[f"{mode}_ratio_tree_over_{side}"] = out[f"tree_{mode}_e2e_median"] / out[f"{side}_{mode}_e2e_median"]
if len(revs) == 1:  # the names of the one-revision form
    for mode in ("wrk", "batch"):
        out[f"{mode}_ratio_tree_over_rev"] = out[f"{mode}_ratio_tree_over_rev1"]
json.dump(out, open(d + "/ab.json", "w"), indent=1)
print(f"\nA/B, no-op tasks end to end, 2 workers, median of {len(out['tree_wrk_e2e_per_s'])} (results {d})")
print(f"  {'':9}  {'wrk tasks/s':>12} {'x first':>8}  {'batch tasks/s':>14} {'x first':>8}")
for side in sides:
    w, b = out[f"{side}_wrk_e2e_median"], out[f"{side}_batch_e2e_median"]
    print(f"  {names[side]:9}  {w:>12,.0f} {w / out['rev1_wrk_e2e_median']:>8.2f}  "
          f"{b:>14,.0f} {b / out['rev1_batch_e2e_median']:>8.2f}")
PYEOF
}

# ---------------------------------------------------------------- exec
# Exec kinds (docs/exec-kinds.md): through warmpool itself (--exec-kind, 4 workers): the
# memory of warmpool + a Python zygote + its children, each child having read the whole
# context, against ProcessPoolExecutor(4, initializer=...) for a 256 MiB array and a dict
# of 1M strings; the no-op task rate of the Python exec kind against the C echo kind and
# PPE, and one task's round trip (bench/exec_warmpool.py). Then the same memory cases and
# the bare protocol round trip with wp-exec-drive in warmpool's place (exec_sharing.py).
_bench_exec() {
    log "exec: through warmpool: memory, no-op rate, round trip (4 workers)"
    run timeout 1800 $PY "$BENCH/exec_warmpool.py" "$WP" "$OUT/exec" \
        --mb "${WP_BENCH_EXEC_MB:-256}" --entries "${WP_BENCH_EXEC_ENTRIES:-1000000}" \
        --n "${WP_BENCH_EXEC_N:-$TP_N}"
    log "exec: wp-exec-drive: Python zygote + 4 children vs ProcessPoolExecutor(4), table and dict"
    run timeout 900 $PY "$BENCH/exec_sharing.py" "$ROOT/build/release/tools/wp-exec-drive" \
        "$OUT/exec" --mb "${WP_BENCH_EXEC_MB:-256}" --entries "${WP_BENCH_EXEC_ENTRIES:-1000000}"
}

# ---------------------------------------------------------------- scale
# Databases of WP_BENCH_SCALE_SIZES finished tasks, filled through SQL in the real
# schema (bench/scale_tool.c: about 15 s per million here, not hours of HTTP). For each
# size, on a service with 2 workers: GET /v1/stats, every list filter (a page of 20, and
# a next page by cursor) and GET by id, 200 requests each (wpbench.py latency); 10,000
# no-op tasks end to end in batches of 100 while a client polls /v1/stats every 50 ms
# (WP_BENCH_REPS times, and as many on an empty database for reference);
# then claims through the store (1,000, one transaction each) without and with 100,000
# tasks waiting for a retry. At the largest size: the submission p99 under a wrk load
# (one task per POST, 8 connections, WP_BENCH_SCALE_LOAD_S seconds) without
# --retention, then with --retention 1d (90 % of the tasks expire at once). Last, a
# schema-1 database of WP_BENCH_SCALE_MIGRATE_N tasks (the previous release's SQL) is
# upgraded as the supervisor does it. Database and WAL sizes throughout.
file_sizes() { # DB OUT: sizes of the database, its WAL, and the free disk
    { ls -l "$1" "$1-wal" 2>/dev/null || true; df -B1 --output=avail "$(dirname "$1")" | tail -1 | sed 's/^/avail /'; } >"$2"
}

scale_purge_load() { # DB DIR SECONDS
    local db=$1 d=$2 secs=$3 side
    for side in no_retention retention; do
        if [ $side = retention ]; then
            start_warmpool_on "$db" scale-$side --workers 2 --retention 1d --log-level info || die "cannot start warmpool"
        else
            start_warmpool_on "$db" scale-$side --workers 2 || die "cannot start warmpool"
        fi
        curl -s "$URL/v1/stats" >"$d/load_${side}_stats_before.json"
        (for _ in $(seq $((secs + 15))); do
            printf '%s %s %s\n' "$(date +%s.%N)" "$(stat -c %s "$db-wal" 2>/dev/null || echo 0)" \
                "$(curl -s -m 2 "$URL/v1/stats" | $PY -c 'import json,sys; t=json.load(sys.stdin)["tasks"]; print(sum(t.values()))' 2>/dev/null || echo -)"
            sleep 1
        done) >"$d/load_${side}_samples.txt" &
        local sampler=$!
        WP_BENCH_N=1000000000 run timeout $((secs + 30)) wrk -t2 -c8 -d"${secs}s" --latency \
            -s "$BENCH/submit.lua" "$URL/v1/tasks" >"$d/load_${side}.wrk.txt" 2>&1 || true
        curl -s "$URL/v1/stats" >"$d/load_${side}_stats_after.json"
        if [ $side = retention ]; then
            sleep 10            # the purge alone, idle (the sampler records it)
        fi
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        curl -s "$URL/v1/stats" >"$d/load_${side}_stats_idle.json"
        stop_warmpool
        file_sizes "$db" "$d/files_load_$side.txt"
    done
}

_bench_scale() {
    local d=$OUT/scale sizes=${WP_BENCH_SCALE_SIZES:-"10000 1000000 10000000"}
    local tool=$ROOT/build/release/bench/scale_tool load_s=${WP_BENCH_SCALE_LOAD_S:-20}
    local mig_n=${WP_BENCH_SCALE_MIGRATE_N:-10000000} dir=${WP_BENCH_SCALE_DIR:-$WORK/scale}
    local largest=${sizes##* } n db
    mkdir -p "$d" "$dir"
    command -v wrk >/dev/null || die "scale needs wrk"
    log "scale: sizes $sizes, upgrade of $mig_n; databases in $dir ($(df -h --output=avail "$dir" | tail -1) free)"
    local r
    for r in $(seq "$REPS"); do
        start_warmpool scale-empty-$r --workers 2 || die "cannot start warmpool"
        WPB e2e "$URL" "$d/e2e_0_$r.json" --mode batch --n 10000 --per-batch 100 --threads 4 \
            --poll-ms 50 >/dev/null
        stop_warmpool
    done
    for n in $sizes; do
        db=$dir/$n.db
        log "scale: $n tasks: fill"
        run "$tool" fill "$db" "$n" --days 10 >"$d/fill_$n.json" 2>>"$d/scale_tool.log"
        file_sizes "$db" "$d/files_$n.txt"
        log "scale: $n tasks: latency, end to end"
        start_warmpool_on "$db" "scale-$n" --workers 2 || die "cannot start warmpool"
        WPB latency "$URL" "$d/latency_$n.json" --n 200 >/dev/null
        for r in $(seq "$REPS"); do
            WPB e2e "$URL" "$d/e2e_${n}_$r.json" --mode batch --n 10000 --per-batch 100 \
                --threads 4 --poll-ms 50 --allow-existing >/dev/null
        done
        stop_warmpool
        file_sizes "$db" "$d/files_${n}_after_e2e.txt"
        log "scale: $n tasks: claims"
        run "$tool" claims "$db" --ready 1000 --delayed 0 >"$d/claims_${n}_0.json" 2>>"$d/scale_tool.log"
        run "$tool" claims "$db" --ready 1000 --delayed 100000 >"$d/claims_${n}_100000.json" 2>>"$d/scale_tool.log"
        if [ "$n" = "$largest" ]; then
            log "scale: $n tasks: submissions under load, without and with --retention"
            scale_purge_load "$db" "$d" "$load_s"
        fi
        rm -f "$db" "$db-wal" "$db-shm" "$db.lock"
    done
    log "scale: upgrade of a schema-1 database of $mig_n tasks"
    db=$dir/v1.db
    run "$tool" fill "$db" "$mig_n" --schema 1 --days 10 >"$d/fill_v1_$mig_n.json" 2>>"$d/scale_tool.log"
    file_sizes "$db" "$d/files_v1_$mig_n.txt"
    run "$tool" migrate "$db" >"$d/migrate_$mig_n.json" 2>"$d/migrate_$mig_n.log"
    file_sizes "$db" "$d/files_v1_${mig_n}_migrated.txt"
    rm -f "$db" "$db-wal" "$db-shm" "$db.lock"
    $PY "$BENCH/scale_summary.py" "$d"
}

# ---------------------------------------------------------------- pg
# The PostgreSQL backend on this machine: a throwaway cluster with PostgreSQL's durable
# defaults (fsync on, synchronous_commit on; pg_stat_statements loaded), next to SQLite.
#  1. end to end, no-op tasks (wpbench e2e, wrk and batch, as `throughput`): SQLite; one
#     PostgreSQL instance; the same with its workers committing durably (fault point
#     worker_durable: what synchronous_commit=off saves); two instances on one database
#     (submissions to the first, both instances' workers claiming);
#  2. round trip of one task (POST ?wait; and POST to one instance, GET ?wait on the other);
#  3. a task's cost to the database through the store (bench/store_cost costs): bytes
#     and segments each way, statements, server time, WAL, for the writer's inserts and a
#     worker's finish + claim;
#  4. the claims per second the database sustains: through the store (store_cost claims,
#     1..8 processes) and with pgbench running warmpool's own claim and finish SQL
#     (bench/pgbench_script.py), with and without its NOTIFY, synchronous_commit off/on.
# Each instance has 2 workers: two instances are 4 workers and 2 HTTP processes on this
# machine's 2 cores, with the database: they show the sharing works, not added CPU
# (docs/scaling.md does the arithmetic for hosts).
pg_db() { # NAME: a fresh database of the bench cluster; its URI on stdout
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1
    echo "${PG_ADMIN%/postgres}/$1"
}

# start_second DB NAME [flags...]: a second instance; sets WP_PID2, URL2
start_second() {
    local db=$1 name=$2 port
    shift 2
    port=$(free_port)
    URL2=http://127.0.0.1:$port
    printf '%s\n' "warmpool --listen 127.0.0.1:$port --db $db --log-level warn $*" >>"$OUT/commands.txt"
    "$WP" --listen "127.0.0.1:$port" --db "$db" --log-level warn "$@" \
        2>>"$OUT/warmpool-$name.log" &
    WP_PID2=$!
    $PY "$BENCH/wpbench.py" wait-ready "$URL2" --timeout 120 2>>"$OUT/warmpool-$name.log" ||
        die "warmpool ($name) did not start"
}

_bench_pg() {
    local d=$OUT/pg n=${WP_BENCH_PG_N:-$TP_N} cost_n=${WP_BENCH_PG_COST_N:-20000}
    local secs=${WP_BENCH_PG_SECONDS:-20} clients=${WP_BENCH_PG_CLIENTS:-"1 2 4 8"} r db mode
    mkdir -p "$d"
    command -v pgbench >/dev/null || die "pg needs pgbench (postgresql-client-15)"
    # a folder of its own: the cluster runs as the postgres user, who cannot enter $WORK (0700)
    PG_DIR=$(mktemp -d /tmp/warmpool-bench-pg.XXXXXX)
    PG_ADMIN=$(PG_CLUSTER_OPTS="-c shared_preload_libraries=pg_stat_statements" \
        "$ROOT/scripts/pg-cluster.sh" start "$PG_DIR" durable) || die "cannot start PostgreSQL"
    echo "PG_CLUSTER_OPTS='-c shared_preload_libraries=pg_stat_statements' scripts/pg-cluster.sh start DIR durable" >>"$OUT/commands.txt"
    psql -At "$PG_ADMIN" -c "SELECT version()" >"$d/version.txt"
    psql -At "$PG_ADMIN" -c "SELECT name, setting FROM pg_settings WHERE name IN ('fsync','synchronous_commit','shared_buffers','wal_writer_delay','max_connections')" >"$d/settings.txt"

    log "pg: end to end, $n no-op tasks (wrk and batch): SQLite, PostgreSQL x1, x1 durable workers, x2; $REPS repetitions"
    for r in $(seq "$REPS"); do
        warmpool_e2e "pg-sqlite-$r" "$d/sqlite_wrk_$r.json" "$d/sqlite_batch_$r.json"
        for mode in wrk batch; do
            db=$(pg_db "e2e_one_${mode}_$r")
            start_warmpool_on "$db" "pg-one-$mode-$r" --workers 2 || die "cannot start warmpool on PostgreSQL"
            pg_e2e "$mode" "$d/pg1_${mode}_$r.json"
            stop_warmpool
            db=$(pg_db "e2e_durable_${mode}_$r")
            export WARMPOOL_FAULTS=worker_durable=1     # the release preset has fault points
            start_warmpool_on "$db" "pg-durable-$mode-$r" --workers 2 ||
                die "cannot start warmpool on PostgreSQL"
            unset WARMPOOL_FAULTS
            pg_e2e "$mode" "$d/pg1durable_${mode}_$r.json"
            stop_warmpool
            db=$(pg_db "e2e_two_${mode}_$r")
            start_warmpool_on "$db" "pg-two-a-$mode-$r" --workers 2 || die "cannot start warmpool on PostgreSQL"
            start_second "$db" "pg-two-b-$mode-$r" --workers 2
            pg_e2e "$mode" "$d/pg2_${mode}_$r.json"
            stop_warmpool
        done
    done

    log "pg: round trip of one task"
    start_warmpool "rt-sqlite" --workers 2 || die "cannot start warmpool"
    WPB roundtrip "$URL" "$d/rt_sqlite.json" >/dev/null
    stop_warmpool
    db=$(pg_db rt_one)
    start_warmpool_on "$db" "rt-pg-one" --workers 2 || die "cannot start warmpool"
    WPB roundtrip "$URL" "$d/rt_pg1.json" >/dev/null
    stop_warmpool
    db=$(pg_db rt_two)
    start_warmpool_on "$db" "rt-pg-two-a" --workers 1 || die "cannot start warmpool"
    start_second "$db" "rt-pg-two-b" --workers 1
    WPB roundtrip "$URL" "$d/rt_pg2_across.json" --wait-on "$URL2" >/dev/null
    stop_warmpool

    log "pg: a task's cost to the database ($cost_n tasks, through the store)"
    local tool=$ROOT/build/release/bench/store_cost
    db=$(pg_db cost)
    run "$tool" costs "$db" --n "$cost_n" >"$d/cost_pg.json"
    mkdir -p "$WORK/cost-sqlite"
    run "$tool" costs "$WORK/cost-sqlite/w.db" --n "$cost_n" >"$d/cost_sqlite.json"

    log "pg: claims per second through the store (1..8 processes, nothing else running)"
    for r in $clients; do
        db=$(pg_db "claims_$r")
        run "$tool" claims "$db" --procs "$r" --n "$cost_n" >"$d/claims_pg_$r.json"
        mkdir -p "$WORK/claims-sqlite-$r"
        run "$tool" claims "$WORK/claims-sqlite-$r/w.db" --procs "$r" --n "$cost_n" >"$d/claims_sqlite_$r.json"
    done
    db=$(pg_db claims_durable)
    run "$tool" claims "$db" --procs 2 --n "$cost_n" --durable >"$d/claims_pg_2_durable.json"

    log "pg: the database's ceiling with pgbench, warmpool's claim + finish SQL, ${secs}s per run"
    $PY "$BENCH/pgbench_script.py" "$ROOT/storage/store_pg.c" >"$d/claim_finish.sql"
    $PY "$BENCH/pgbench_script.py" "$ROOT/storage/store_pg.c" --no-notify >"$d/claim_finish_nonotify.sql"
    local script sync
    for script in claim_finish claim_finish_nonotify; do
        for sync in off on; do
            [ "$script" = claim_finish_nonotify ] && [ "$sync" = on ] && continue
            for r in $clients; do
                db=$(pg_db pgb)
                run "$tool" costs "$db" --n 10 >/dev/null      # the schema, an instance
                # enough pending tasks for the run: 3,000 a second at most per client
                psql -q "$db" -c "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at) SELECT 'echo', 'pending', 0, '{}', 1, 300000, 1 FROM generate_series(1, $((3000 * secs * r + 10000)))" -c "VACUUM ANALYZE tasks" >/dev/null
                PGOPTIONS="-c synchronous_commit=$sync" run timeout $((secs + 60)) pgbench -n -M prepared \
                    -c "$r" -j "$r" -T "$secs" -f "$d/$script.sql" "$db" >"$d/pgbench_${script}_${sync}_$r.txt" 2>&1 || true
            done
        done
    done
    stop_pg
    $PY - "$d" <<'PYEOF'
import glob, json, os, re, statistics, sys
d = sys.argv[1]
def med(pattern, key):
    v = [json.load(open(f))[key] for f in sorted(glob.glob(os.path.join(d, pattern)))]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
out = {}
for side in ("sqlite", "pg1", "pg1durable", "pg2"):
    for mode in ("wrk", "batch"):
        out[f"{side}_{mode}_submit_per_s"] = med(f"{side}_{mode}_*.json", "submit_per_s")
        out[f"{side}_{mode}_e2e_per_s"] = med(f"{side}_{mode}_*.json", "e2e_per_s")
for f in ("rt_sqlite", "rt_pg1", "rt_pg2_across"):
    if os.path.exists(os.path.join(d, f + ".json")):
        out[f] = json.load(open(os.path.join(d, f + ".json")))
for f in ("cost_pg", "cost_sqlite"):
    out[f] = json.load(open(os.path.join(d, f + ".json")))
out["claims"] = {os.path.basename(f)[:-5]: json.load(open(f))["claims_per_s"]
                 for f in sorted(glob.glob(os.path.join(d, "claims_*.json")))}
pgb = {}
for f in sorted(glob.glob(os.path.join(d, "pgbench_*.txt"))):
    m = re.search(r"tps = ([0-9.]+)", open(f).read())
    pgb[os.path.basename(f)[8:-4]] = float(m.group(1)) if m else None
out["pgbench_tps"] = pgb
json.dump(out, open(os.path.join(d, "pg.json"), "w"), indent=1)
print(json.dumps(out, indent=1))
PYEOF
}

# pg_e2e MODE OUT: wpbench e2e against $URL (wrk or batch), as warmpool_e2e does
pg_e2e() {
    if [ "$1" = wrk ]; then
        WPB e2e "$URL" "$2" --mode wrk --n "${WP_BENCH_PG_N:-$TP_N}" --wrk-script "$BENCH/submit.lua" \
            --wrk-threads 2 --wrk-conns 32 --wrk-seconds 60 >/dev/null
    else
        WPB e2e "$URL" "$2" --mode batch --n "${WP_BENCH_PG_N:-$TP_N}" --per-batch 100 \
            --threads 4 >/dev/null
    fi
}

# other processes on the machine make every figure noisier: note the load around each part
loadavg() { echo "$1 $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"; }
bench_throughput() { loadavg throughput-start; _bench_throughput; loadavg throughput-end; }
bench_hot() { loadavg hot-start; _bench_hot; loadavg hot-end; }
bench_sharing() { loadavg sharing-start; _bench_sharing; loadavg sharing-end; }
bench_preload() { loadavg preload-start; _bench_preload; loadavg preload-end; }
bench_wal() { loadavg wal-start; _bench_wal; loadavg wal-end; }
bench_ab() { loadavg ab-start; _bench_ab; loadavg ab-end; }
bench_exec() { loadavg exec-start; _bench_exec; loadavg exec-end; }
bench_scale() { loadavg scale-start; _bench_scale; loadavg scale-end; }
bench_pg() { loadavg pg-start; _bench_pg; loadavg pg-end; }

case $WHAT in
all)
    bench_throughput
    bench_hot
    bench_sharing
    bench_preload
    bench_wal
    bench_exec
    ;;
wal) bench_wal ;;
exec) bench_exec ;;
throughput) bench_throughput ;;
hot) bench_hot ;;
sharing) bench_sharing ;;
preload) bench_preload ;;
ab)
    bench_ab
    exit 0
    ;;
scale)
    bench_scale
    exit 0
    ;;
pg)
    bench_pg
    exit 0
    ;;
esac

$PY "$BENCH/summarize.py" "$OUT" --wall-s $(($(date +%s) - T_START)) --root "$ROOT"
