#!/usr/bin/env bash
# pg-cluster.sh -- a throwaway PostgreSQL 15 cluster for the tests and the benchmarks.
#
#   scripts/pg-cluster.sh start DIR [fast|durable]   initdb in DIR/data, start it on a free
#                                                     loopback port (and a socket in DIR);
#                                                     prints its admin URL (also in DIR/url)
#   scripts/pg-cluster.sh stop DIR                    stop it (by the pid in postmaster.pid)
#   scripts/pg-cluster.sh restart DIR                 stop (fast) and start it again, same port
#
# PG_CLUSTER_OPTS (environment, at start) adds server options, e.g.
# "-c shared_preload_libraries=pg_stat_statements" (bench/run.sh pg).
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user
# (Debian's postgresql-15 creates it) and DIR is given to that user. `fast` (the default,
# for tests) runs with fsync=off: a cluster that lives for one test run needs no
# durability against power loss; `durable` keeps PostgreSQL's defaults (benchmarks).
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
cmd=${1:?usage: pg-cluster.sh start|stop|restart DIR [fast|durable]}
dir=${2:?usage: pg-cluster.sh start|stop|restart DIR [fast|durable]}
mode=${3:-fast}

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local port=$1
    local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400"
    opts+=" -c shared_buffers=128MB -c log_min_messages=warning -c log_line_prefix=%m"
    [ "$mode" = fast ] && opts+=" -c fsync=off -c full_page_writes=off"
    [ -n "${PG_CLUSTER_OPTS:-}" ] && opts+=" $PG_CLUSTER_OPTS"
    echo "${PG_CLUSTER_OPTS:-}" >"$dir/extra-opts"
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -o "$opts" -w -t 60 start >/dev/null
    echo "$port" >"$dir/port"
    echo "$mode" >"$dir/mode"
    echo "postgresql://postgres@127.0.0.1:$port/postgres" >"$dir/url"
    cat "$dir/url"
}

stop() {
    [ -f "$dir/data/postmaster.pid" ] || return 0
    local pid
    pid=$(head -1 "$dir/data/postmaster.pid")
    # SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, then a clean checkpoint
    kill -INT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
        --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    start "$(free_port)"
    ;;
stop)
    stop
    ;;
restart)
    stop
    mode=$(cat "$dir/mode")
    PG_CLUSTER_OPTS=$(cat "$dir/extra-opts" 2>/dev/null || true)
    start "$(cat "$dir/port")" >/dev/null
    ;;
*)
    echo "usage: pg-cluster.sh start|stop|restart DIR [fast|durable]" >&2
    exit 2
    ;;
esac
