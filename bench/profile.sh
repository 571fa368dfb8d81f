#!/usr/bin/env bash
# bench/profile.sh -- where warmpool's CPU goes under load: perf profiles and CPU per task.
#
#   bench/profile.sh [OUTDIR]      (default bench/results/profile-<UTC timestamp>/)
#
# Starts the release build (build/release/warmpool, built beforehand) with 2 workers on a
# fresh SQLite database, loads it with wrk -t2 -c32 and bench/submit.lua (one task per
# POST, the workers consuming them), and during WP_PROF_SECONDS (5) of that load:
#   - perf record -e cpu-clock -F WP_PROF_FREQ (999) --call-graph dwarf on every warmpool
#     process (this machine's VM has no hardware counters: cpu-clock samples); with
#     WP_PROF_FREQ=0 no perf at all (CPU per task without perf's own cost);
#   - utime + stime of each process (/proc/PID/stat) and of wrk, and the tasks finished,
#     so CPU per task per process (cpu_per_task.txt).
# Then writes small text summaries (the raw perf.data stays in the temporary folder,
# removed at the end unless WP_PROF_KEEP=1): per thread, and per thread and library
# (by_thread.txt, by_thread_dso.txt), and for each kind of thread the warmpool functions
# its time goes to and the leaf symbols (summary.txt, bench/perf_summary.py).
# WP_PROF_FLAGS adds flags to warmpool (e.g. "--durability normal"); WP_PROF_BIN runs
# another binary (e.g. the other side of an A/B).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WP=${WP_PROF_BIN:-$ROOT/build/release/warmpool}
SECS=${WP_PROF_SECONDS:-5}
FREQ=${WP_PROF_FREQ:-999}
OUT=${1:-$ROOT/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
PY=/usr/bin/python3
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/warmpool-prof.XXXXXX)
WP_PID="" WRK_PID=""
cleanup() {
    [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null || true
    if [ -n "$WP_PID" ]; then
        kill -TERM "$WP_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$WP_PID" 2>/dev/null || true
    fi
    if [ "${WP_PROF_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
command -v perf >/dev/null || { echo "profile.sh needs perf: scripts/deps.sh bench" >&2; exit 1; }
[ -x "$WP" ] || { echo "build the release preset first ($WP)" >&2; exit 1; }

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$port
# shellcheck disable=SC2086
"$WP" --listen "127.0.0.1:$port" --db "$WORK/w.db" --workers 2 --log-level warn \
    ${WP_PROF_FLAGS:-} 2>"$OUT/warmpool.log" &
WP_PID=$!
$PY "$ROOT/bench/wpbench.py" wait-ready "$URL" --timeout 60

# every process of the service: the supervisor and its descendants
pids=$(ps -e -o pid=,ppid= | awk -v root="$WP_PID" '
    { parent[$1] = $2 } END {
        keep[root] = 1; changed = 1
        while (changed) { changed = 0
            for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
        for (p in keep) print p }' | sort -n)
role() { # PID -> supervisor | http | worker | agent | zygote | ...
    local p=$1 comm
    [ "$p" = "$WP_PID" ] && { echo supervisor; return; }
    comm=$(cat "/proc/$p/comm" 2>/dev/null || echo gone)
    case $comm in
    warmpool-*) echo "${comm#warmpool-}" ;;
    *) if [ "$(ls "/proc/$p/task" 2>/dev/null | wc -l)" -gt 3 ]; then echo http; else echo "$comm"; fi ;;
    esac
}
: >"$OUT/processes.txt"
for p in $pids; do echo "$p $(role "$p")" >>"$OUT/processes.txt"; done

cpu_of() { # PID -> utime+stime in clock ticks (fields 14, 15 after the comm)
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0
}
done_tasks() {
    curl -s "$URL/v1/stats" | $PY -c 'import json,sys; t=json.load(sys.stdin)["tasks"]; print(t["succeeded"])'
}

WP_BENCH_N=1000000000 wrk -t2 -c32 -d$((SECS + 6))s -s "$ROOT/bench/submit.lua" "$URL/v1/tasks" \
    >"$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
sleep 2                                 # past the start
declare -A c0
for p in $pids $WRK_PID; do c0[$p]=$(cpu_of "$p"); done
n0=$(done_tasks)
t0=$(date +%s.%N)
cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg.txt"
if [ "$FREQ" = 0 ]; then
    sleep "$SECS"                       # CPU per task without perf's own cost
else
    perf record -q -e cpu-clock -F "$FREQ" --call-graph dwarf,8192 -o "$WORK/perf.data" \
        -p "$(echo $pids | tr ' ' ',')" -- sleep "$SECS" 2>"$OUT/perf-record.log" || true
fi
t1=$(date +%s.%N)
n1=$(done_tasks)
hz=$(getconf CLK_TCK)
{
    printf 'window %.2f s, tasks finished in it: %d (%.0f/s); loadavg before/after: %s / %s\n' \
        "$(echo "$t1 - $t0" | bc)" $((n1 - n0)) "$(echo "($n1 - $n0) / ($t1 - $t0)" | bc -l)" \
        "$(cat "$OUT/loadavg.txt")" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-8s %-14s %10s %12s\n' pid role cpu_ms us_per_task
    for p in $pids $WRK_PID; do
        c1=$(cpu_of "$p")
        r=$([ "$p" = "$WRK_PID" ] && echo wrk || role "$p")
        awk -v p="$p" -v r="$r" -v d=$((c1 - c0[$p])) -v hz="$hz" -v n=$((n1 - n0)) \
            'BEGIN { printf "%-8s %-14s %10.0f %12.1f\n", p, r, d * 1000 / hz, n ? d * 1e6 / hz / n : 0 }'
    done
} >"$OUT/cpu_per_task.txt"
wait "$WRK_PID" 2>/dev/null || true
WRK_PID=""
cat "$OUT/cpu_per_task.txt"
[ "$FREQ" = 0 ] && exit 0

rep() { perf report -i "$WORK/perf.data" --stdio --percent-limit 0.4 "$@" 2>/dev/null | grep -v '^$' | grep -v '^# *$\|Tip:\|perf.data header'; }
rep --no-children --sort pid -g none >"$OUT/by_thread.txt" || true
rep --no-children --sort pid,dso -g none >"$OUT/by_thread_dso.txt" || true
perf script -i "$WORK/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null |
    $PY "$ROOT/bench/perf_summary.py" --top 15 >"$OUT/summary.txt"
echo "profile: $OUT" >&2
