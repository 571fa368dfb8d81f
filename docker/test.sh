#!/usr/bin/env bash
# docker/test.sh - build the warmpool image and test it as users run it.
#
# Usage (from anywhere; the build context is the repository root):
#   bash docker/test.sh
#
# What it checks (any failure -> exit 1, last line "FAIL ..."):
#   - the image builds from ./Dockerfile (its build stage runs the unit tests)
#   - the image is at most MAX_SIZE_MB, and warmpool never runs as root in it
#   - a container with a published 127.0.0.1 port and a host volume on /data,
#     hardened (--user 10001, read-only, no capabilities), answers GET /healthz,
#     and the image's HEALTHCHECK passes (and fails when nothing listens, so it
#     is not a no-op)
#   - echo tasks submitted with curl succeed with result == input
#   - `stop -t STOP_TIMEOUT` drains (a running sleep task finishes) and the
#     container exits 0 well before the timeout (PID 1 handles SIGTERM)
#   - a new container on the same volume (started as root, the default: the
#     entrypoint drops to uid 10001) finds every task with its result
#   - volumes and users (docker/entrypoint.sh): a named volume; a host directory
#     owned by root; --user with an arbitrary uid on a directory it owns and on a
#     new named volume; --user on a root-owned directory stops with a message
#     saying what to chown; so does a read-only /data; root without
#     capabilities stops with a message
#   - PostgreSQL (PG_TEST=0 skips it): docker/compose.yaml and compose.postgres.yaml
#     valid against the Compose Specification schema; docker/postgres/Dockerfile
#     builds; PostgreSQL and two replicas on one network (as compose.postgres.yaml):
#     a task submitted to one is done and seen from the other, tasks run on both,
#     no replica logs the database password, a stopped replica leaves the store
# It prints a summary (image size, ready time, stop time) and "N passed, N failed".
# Containers and the temporary volume dir are removed on exit (the volume is
# kept on failure, for a look); the image is kept.
#
# Engines: ENGINE=podman|docker; by default docker when a Docker engine answers,
# else podman. With rootful podman on Debian/Ubuntu (the project's CI machine:
# no Docker engine, no registry) the script first sets podman up the way
# shared/tools/container-smoke.sh does: installs podman/runc/debootstrap, writes
# a containers.conf drop-in, and once debootstraps a debian:bookworm-slim base
# image from the host's apt mirror (cached in /var/cache/container-smoke), so
# `FROM debian:bookworm-slim` resolves without a registry. SETUP=0 skips that.
#
# Environment knobs (all optional):
#   ENGINE         podman | docker (default: auto-detected, see above)
#   SETUP          auto (default: podman as root) | 1 | 0
#   TAG            image tag (default localhost/warmpool:test)
#   HOST_PORT      host port published on 127.0.0.1 (default: a free one >= 18080)
#   VOLUME_HOST    host dir mounted on /data (default: a new dir under /var/tmp)
#   STOP_TIMEOUT   seconds `stop` waits before SIGKILL (default 20)
#   MAX_SIZE_MB    image size limit in MB of 10^6 bytes (default 120)
#   READY_MAX_S    fail when /healthz takes longer than this after start (default 5;
#                  the target, 1 s, is reported)
#   WAIT_SECS      how long to wait for /healthz (default 60)
#   BUILD_TIMEOUT  seconds for the image build (default 2400)
#   BUILD_ARGS     extra args for the build, e.g. "--build-arg BASE=debian:12-slim"
#   SUITE          Debian suite of the bootstrapped base (default bookworm)
#   STORAGE        podman storage: overlay (default when the kernel has it) | vfs
# shellcheck disable=SC2016,SC2317  # single-quoted bash -c and jq programs; functions run via check
set -Eeuo pipefail
[ "${BASH_VERSINFO[0]}" -ge 4 ] || { echo "FAIL needs bash 4 or later (macOS: brew install bash)"; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${TAG:-localhost/warmpool:test}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
MAX_SIZE_MB=${MAX_SIZE_MB:-120}
READY_MAX_S=${READY_MAX_S:-5}
WAIT_SECS=${WAIT_SECS:-60}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400}
SUITE=${SUITE:-bookworm}
SETUP=${SETUP:-auto}
CACHE_DIR=/var/cache/container-smoke   # shared with container-smoke.sh on purpose
CMD_TIMEOUT=120                         # bound on any single engine command

T0=$(date +%s.%N)
log() { printf '[docker-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
PASSED=0 FAILED=0 FAILS=""
pass() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
fail() { FAILED=$((FAILED + 1)); FAILS+="$*; "; echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
not() { ! "$@"; }
jqt() { jq -en "$@" >/dev/null 2>&1; }   # a jq test on --argjson values
finish() {
    echo "container: $PASSED passed, $FAILED failed"
    if [ "$FAILED" -gt 0 ]; then echo "FAIL $FAILS"; exit 1; fi
    echo "PASS $TAG"
    exit 0
}
# a failure that makes the remaining checks meaningless
die() { fail "$*"; show_logs; finish; }

for tool in curl jq timeout awk; do
    command -v "$tool" >/dev/null 2>&1 || NEED_TOOLS+=" $tool"
done

# ------------------------------------------------------------ engine choice
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && ! docker --version 2>/dev/null | grep -qi podman \
       && timeout 15 docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        ENGINE=podman
    fi
fi
case "$ENGINE" in podman|docker) ;; *) echo "FAIL ENGINE must be podman or docker"; exit 2;; esac
if [ "$SETUP" = auto ]; then
    SETUP=0; [ "$ENGINE" = podman ] && [ "$(id -u)" = 0 ] && SETUP=1
fi

# ------------------------------------------------------------ 1. podman setup
# The same steps as shared/tools/container-smoke.sh (see there for the why of
# each): packages, a containers.conf drop-in, and a local debian base image.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local try
    for try in 1 2 3 4 5 6; do
        apt-get -o DPkg::Lock::Timeout=120 update -q >/tmp/warmpool-docker-test-apt.log 2>&1 && break
        [ "$try" = 6 ] && { tail -20 /tmp/warmpool-docker-test-apt.log >&2; return 1; }
        sleep 10
    done
    timeout 1200 apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" \
        >>/tmp/warmpool-docker-test-apt.log 2>&1 \
        || { tail -20 /tmp/warmpool-docker-test-apt.log >&2; return 1; }
}

PODMAN_OPTS=()
T_SETUP=0 T_BOOTSTRAP=""
if [ "$SETUP" = 1 ]; then
    t=$(now)
    [ "$(id -u)" = 0 ] || { echo "FAIL SETUP=1 needs root"; exit 2; }
    need=()
    for p in podman buildah runc debootstrap uidmap curl jq; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        apt_install "${need[@]}" containernetworking-plugins netavark aardvark-dns \
            slirp4netns conmon iptables || { echo "FAIL apt-get install failed"; exit 1; }
    fi
    NEED_TOOLS=""
    # root here may lack CAP_SYS_RESOURCE (podman's default rlimits then fail
    # with "setrlimit ...: Operation not permitted"), and crun 1.8 refuses a
    # hybrid cgroup layout: cap the ulimits and use runc with cgroupfs.
    hn=$(ulimit -Hn); [ "$hn" = unlimited ] && hn=1048576
    [ "$hn" -gt 1048576 ] && hn=1048576
    hu=$(ulimit -Hu); { [ "$hu" = unlimited ] || [ "$hu" -gt 32768 ]; } && hu=32768
    mkdir -p /etc/containers/containers.conf.d
    conf=/etc/containers/containers.conf.d/50-container-smoke.conf
    if [ ! -e "$conf" ] || ! grep -q 'container-smoke' "$conf"; then
        cat > "$conf" <<EOF
# written by container-smoke.sh (see there for why); also by warmpool's docker/test.sh
[containers]
default_ulimits = ["nofile=$hn:$hn", "nproc=$hu:$hu"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
    fi
    STORAGE=${STORAGE:-}
    if [ -z "$STORAGE" ]; then grep -qw overlay /proc/filesystems && STORAGE=overlay || STORAGE=vfs; fi
    if [ "$STORAGE" = vfs ]; then
        PODMAN_OPTS=(--root /var/lib/containers/storage-vfs
                     --runroot /run/containers/storage-vfs --storage-driver vfs)
    fi
    BASE_LOCAL=localhost/debian:$SUITE-slim
    if ! podman "${PODMAN_OPTS[@]}" image exists "$BASE_LOCAL"; then
        mkdir -p "$CACHE_DIR"
        tarball=$CACHE_DIR/debian-$SUITE-minbase.tar
        if [ ! -s "$tarball" ]; then
            tb=$(now)
            srcs=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
            mirror=$(printf '%s\n' "$srcs" | sed -nE 's#^URIs:[[:space:]]*(\S+/debian)/?$#\1#p;s#^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(\S+/debian)/?[[:space:]].*#\2#p' | head -n1)
            secmirror=$(printf '%s\n' "$srcs" | sed -nE 's#^URIs:[[:space:]]*(\S+/debian-security)/?$#\1#p;s#^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(\S+/debian-security)/?[[:space:]].*#\2#p' | head -n1)
            mirror=${mirror:-http://deb.debian.org/debian}
            secmirror=${secmirror:-http://deb.debian.org/debian-security}
            inc=""; case "$mirror" in https:*) inc="--include=ca-certificates";; esac
            rootfs=$(mktemp -d /var/tmp/warmpool-rootfs.XXXXXX)
            log "debootstrap --variant=minbase $SUITE from $mirror (a minute or two, once)"
            # shellcheck disable=SC2086
            if ! timeout 1200 debootstrap --variant=minbase $inc "$SUITE" "$rootfs" "$mirror" \
                    > "$CACHE_DIR/debootstrap.log" 2>&1; then
                tail -20 "$CACHE_DIR/debootstrap.log" >&2; rm -rf "$rootfs"
                echo "FAIL debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; exit 1
            fi
            # make it look like the official slim image (as container-smoke.sh does)
            rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname" "$rootfs/etc/apt/sources.list"
            rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
                   "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
            mkdir -p "$rootfs/var/lib/apt/lists/partial"
            cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $secmirror
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
            printf '#!/bin/sh\n# no service starts inside image builds\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
            chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
            echo force-unsafe-io > "$rootfs/etc/dpkg/dpkg.cfg.d/smoke-unsafe-io"
            printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
                'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
                'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
                > "$rootfs/etc/dpkg/dpkg.cfg.d/smoke-slim"
            cat > "$rootfs/etc/apt/apt.conf.d/smoke-slim" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Apt::AutoRemove::SuggestsImportant "false";
EOF
            find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
            find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
            rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
            tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
            mv "$tarball.tmp" "$tarball"
            rm -rf "$rootfs"
            T_BOOTSTRAP=$(since "$tb")
        fi
        log "importing $tarball as $BASE_LOCAL"
        timeout 600 podman "${PODMAN_OPTS[@]}" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' "$tarball" "$BASE_LOCAL" >/dev/null \
            || { echo "FAIL podman import of the base image failed"; exit 1; }
        for n in "$SUITE-slim" "$SUITE"; do
            podman "${PODMAN_OPTS[@]}" tag "$BASE_LOCAL" "docker.io/library/debian:$n"
        done
        if [ "$SUITE" = bookworm ]; then
            podman "${PODMAN_OPTS[@]}" tag "$BASE_LOCAL" docker.io/library/debian:12-slim docker.io/library/debian:12
        fi
    fi
    T_SETUP=$(since "$t")
fi
[ -z "${NEED_TOOLS:-}" ] || { echo "FAIL missing tools:$NEED_TOOLS"; exit 2; }
command -v "$ENGINE" >/dev/null 2>&1 || { echo "FAIL $ENGINE not found"; exit 2; }
[ "${SETUP_ONLY:-0}" = 1 ] && { log "setup done in ${T_SETUP}s"; exit 0; }

# an engine command, bounded in time
E() { timeout "$CMD_TIMEOUT" "$ENGINE" "${PODMAN_OPTS[@]}" "$@"; }
log "engine: $($ENGINE --version 2>/dev/null | head -n1)"

# ------------------------------------------------------------ 2. build
t=$(now)
build_opts=()
if [ "$ENGINE" = podman ]; then
    # --pull=never: no registry here (and the base is local after setup);
    # --format docker: OCI images drop HEALTHCHECK
    build_opts=(--pull=never --format docker --network host)
fi
log "building $TAG from $ROOT/Dockerfile (build stage runs the unit tests)"
# shellcheck disable=SC2086
if ! timeout "$BUILD_TIMEOUT" "$ENGINE" "${PODMAN_OPTS[@]}" build "${build_opts[@]}" \
        -f "$ROOT/Dockerfile" -t "$TAG" ${BUILD_ARGS:-} "$ROOT" >&2; then
    fail "image builds (and its unit tests pass)"; finish
fi
T_BUILD=$(since "$t")
pass "image builds and its unit tests pass (${T_BUILD}s)"

# ------------------------------------------------------------ 3. image checks
SIZE=$(E image inspect -f '{{.Size}}' "$TAG" 2>/dev/null || echo 0)
SIZE_MB=$(awk -v s="$SIZE" 'BEGIN{printf "%.1f", s/1e6}')
check "image size ${SIZE_MB} MB <= ${MAX_SIZE_MB} MB" \
    awk -v s="$SIZE" -v m="$MAX_SIZE_MB" 'BEGIN{exit !(s <= m*1e6)}'
# the image starts as root on purpose: its entrypoint fixes /data and drops to
# APP_UID (checked below: no warmpool process ever runs as root)
APP_UID=10001
IMG_EP=$(E image inspect -f '{{json .Config.Entrypoint}}' "$TAG" 2>/dev/null || true)
check "image entrypoint is warmpool-entrypoint ($IMG_EP)" \
    bash -c '[[ "$1" == *warmpool-entrypoint* ]]' _ "$IMG_EP"
HC=$(E image inspect -f '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}' "$TAG" 2>/dev/null || true)
check "image has a HEALTHCHECK ($HC)" test -n "$HC"
HC_CMD=()
if [ -n "$HC" ]; then
    if [ "$(jq -r '.[0]' <<<"$HC")" = CMD-SHELL ]; then
        HC_CMD=(sh -c "$(jq -r '.[1]' <<<"$HC")")
    else
        mapfile -t HC_CMD < <(jq -r '.[1:][]' <<<"$HC")
    fi
fi

# ------------------------------------------------------------ 4. run helpers
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${HOST_PORT:-}" ]; then
    HOST_PORT=$((18080 + RANDOM % 1000))
    while ! port_free "$HOST_PORT"; do HOST_PORT=$((HOST_PORT + 1)); done
fi
port_free "$HOST_PORT" || { echo "FAIL port $HOST_PORT is already in use"; exit 1; }
URL=http://127.0.0.1:$HOST_PORT

TEMP_VOL=0
if [ -z "${VOLUME_HOST:-}" ]; then
    VOLUME_HOST=$(mktemp -d /var/tmp/warmpool-docker-test.XXXXXX); TEMP_VOL=1
fi
mkdir -p "$VOLUME_HOST"
# the first container runs with --user APP_UID: the host dir must be writable by it
if ! chown "$APP_UID:$APP_UID" "$VOLUME_HOST" 2>/dev/null; then
    chmod 0777 "$VOLUME_HOST"   # not root (e.g. docker group, rootless podman)
fi
VOL_OPT=""
command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled && VOL_OPT=":Z"

NAMES=() VOLUMES=() DIRS=() NETWORKS=()
RUN_ID=$$-$RANDOM
show_logs() {
    local n
    for n in "${NAMES[@]}"; do
        log "log of $n (tail):"
        E logs "$n" 2>&1 | tail -n 25 | sed 's/^/    | /' >&2 || true
    done
}
cleanup() {
    local n
    for n in "${NAMES[@]}"; do E rm -f "$n" >/dev/null 2>&1 || true; done
    for n in "${VOLUMES[@]}"; do E volume rm -f "$n" >/dev/null 2>&1 || true; done
    for n in "${NETWORKS[@]}"; do E network rm -f "$n" >/dev/null 2>&1 || true; done
    for n in "${DIRS[@]}"; do rm -rf "$n" 2>/dev/null || true; done
    if [ "$TEMP_VOL" = 1 ]; then
        if [ "$FAILED" = 0 ]; then
            # files there belong to the container's uid: rootless podman needs unshare
            rm -rf "$VOLUME_HOST" 2>/dev/null \
                || { [ "$ENGINE" = podman ] && podman unshare rm -rf "$VOLUME_HOST" 2>/dev/null; } \
                || log "could not remove $VOLUME_HOST (owned by the container's uid)"
        else
            log "volume kept: $VOLUME_HOST"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME [extra run args...]; sets READY (seconds from start to /healthz 200).
# /data is VOL_SPEC when set (a named volume, another dir), else VOLUME_HOST.
start() {
    local name=$1; shift
    NAMES+=("$name")
    local t1 state
    t1=$(now)
    E run -d --pull=never --name "$name" -p "127.0.0.1:$HOST_PORT:8080" \
        -v "${VOL_SPEC:-$VOLUME_HOST:/data$VOL_OPT}" "${RUN_OPTS[@]}" "$@" "$TAG" >/dev/null \
        || die "run $name"
    RUN_S=$(since "$t1")
    READY=""
    local deadline=$(( $(date +%s) + WAIT_SECS ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if curl -fsS -m 2 -o /dev/null "$URL/healthz" 2>/dev/null; then READY=$(since "$t1"); break; fi
        state=$(E inspect -f '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
        [ "$state" = running ] || { log "$name is $state before answering"; break; }
        sleep 0.05
    done
    [ -n "$READY" ] || die "$name answers $URL/healthz within ${WAIT_SECS}s"
    pass "$name ready in ${READY}s from \`$ENGINE run\` (which took ${RUN_S}s of it)"
    check "$name ready within ${READY_MAX_S}s" awk -v r="$READY" -v m="$READY_MAX_S" 'BEGIN{exit !(r <= m)}'
}

# stop NAME; sets STOP_S
stop() {
    local name=$1 t1 code
    t1=$(now)
    timeout $((STOP_TIMEOUT + 60)) "$ENGINE" "${PODMAN_OPTS[@]}" stop -t "$STOP_TIMEOUT" "$name" >/dev/null 2>&1 || true
    STOP_S=$(since "$t1")
    code=$(E inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null || echo '?')
    check "$name stopped with exit code 0 (got $code) in ${STOP_S}s" test "$code" = 0
    check "$name stopped well within the ${STOP_TIMEOUT}s timeout (${STOP_S}s)" \
        awk -v s="$STOP_S" -v m="$STOP_TIMEOUT" 'BEGIN{exit !(s < m*0.75)}'
}

RUN_OPTS=()
# podman runs HEALTHCHECKs from systemd timers; without systemd it only logs
# errors, so leave them off (the test runs the image's check command itself)
if [ "$ENGINE" = podman ] && [ ! -d /run/systemd/system ]; then RUN_OPTS=(--no-healthcheck); fi

api() { curl -sS -m 15 -H 'Content-Type: application/json' "$@"; }
# the uids the warmpool processes of container NAME run as, unique, space-separated
warmpool_uids() {
    E exec "$1" sh -c 'for f in /proc/[0-9]*/status; do
        awk '"'"'/^Name:/{n=$2} /^Uid:/{if (n == "warmpool") print $2}'"'"' "$f" 2>/dev/null
    done' | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# arguments after the image name reach warmpool (ENTRYPOINT, not CMD)
help=$(E run --rm --pull=never "${RUN_OPTS[@]}" "$TAG" --help 2>&1) && rc=0 || rc=$?
check "\`$ENGINE run IMAGE --help\` exits 0 and lists --listen (rc $rc)" \
    bash -c '[ "$1" = 0 ] && grep -q -e "--listen" <<<"$2"' _ "$rc" "$help"

# ------------------------------------------------------------ 5. first container
A=warmpool-test-a-$RUN_ID
log "run $A: -p 127.0.0.1:$HOST_PORT:8080 -v $VOLUME_HOST:/data (uid $APP_UID, read-only root, no capabilities)"
start "$A" --user "$APP_UID:$APP_UID" --read-only --tmpfs /tmp --cap-drop ALL \
    --security-opt no-new-privileges
READY_A=$READY

# the processes inside run as non-root, and PID 1 is warmpool itself
status1=$(E exec "$A" cat /proc/1/status 2>/dev/null || true)
comm1=$(E exec "$A" cat /proc/1/comm 2>/dev/null || true)
uids=$(awk '/^Uid:/{print $2, $3, $4, $5}' <<<"$status1")
check "PID 1 is warmpool (got '$comm1')" test "$comm1" = warmpool
check "PID 1 runs as non-root (uids: ${uids:-?})" \
    bash -c '[ -n "$1" ] && for u in $1; do [ "$u" != 0 ] || exit 1; done' _ "$uids"
rootprocs=$(E exec "$A" sh -c 'for f in /proc/[0-9]*/status; do awk -v f="$f" '"'"'/^Name:/{n=$2} /^Uid:/{if ($2==0||$3==0) print n}'"'"' "$f" 2>/dev/null; done' || echo '?')
check "no process in the container runs as root (${rootprocs:-none})" test -z "$rootprocs"
id_u=$(E exec "$A" id -u 2>/dev/null || echo '?')
check "exec'd commands run as non-root (id -u: $id_u)" bash -c '[ "$1" != 0 ] && [ "$1" != "?" ]' _ "$id_u"

# the image's HEALTHCHECK command passes, and fails when nothing answers
if [ ${#HC_CMD[@]} -gt 0 ]; then
    check "HEALTHCHECK command (${HC_CMD[*]}) passes" E exec "$A" "${HC_CMD[@]}"
    check "HEALTHCHECK command fails when nothing listens" \
        not E exec -e WARMPOOL_LISTEN=127.0.0.1:1 "$A" "${HC_CMD[@]}"
fi

# the example plugin and the default rules ship in the image when the repo has them
PLUGIN=/usr/local/lib/warmpool/liblookup.so
B_OPTS=()
if [ -f "$ROOT/examples/lookup_plugin.c" ]; then
    check "example plugin $PLUGIN is in the image" E exec "$A" test -f "$PLUGIN"
    B_OPTS=(-e "WARMPOOL_PLUGIN=$PLUGIN" -e WARMPOOL_KIND_CONFIG=lookup=mb=1)
fi
for r in "$ROOT"/rules/*.rules; do
    [ -f "$r" ] || continue
    check "rules file ${r##*/} is in the image" \
        E exec "$A" test -s "/usr/local/share/warmpool/rules/${r##*/}"
done

# submit echo tasks with varied inputs
INPUTS=(
    '{"n":1}'
    '{"text":"hello, warmpool","list":[1,2,3],"nested":{"ok":true,"none":null}}'
    '"just a string"'
    '[1,"two",{"three":3.5}]'
    '{"unicode":"caf\u00e9 \u2603","big":123456789012}'
)
IDS=()
for i in "${!INPUTS[@]}"; do
    body=$(jq -cn --argjson in "${INPUTS[$i]}" '{kind:"echo", input:$in}')
    resp=$(api -w '\n%{http_code}' -X POST -d "$body" "$URL/v1/tasks" || true)
    code=${resp##*$'\n'}; resp=${resp%$'\n'*}
    id=$(jq -r '.id // empty' <<<"$resp" 2>/dev/null || true)
    if [ "$code" = 202 ] && [ -n "$id" ]; then IDS+=("$id"); else IDS+=(""); fi
    check "POST /v1/tasks echo #$i -> 202 with an id (got $code, id '${id}')" \
        bash -c '[ "$1" = 202 ] && [ -n "$2" ]' _ "$code" "$id"
done
# results: state succeeded, result == input
check_results() {
    local label=$1 i got st
    for i in "${!INPUTS[@]}"; do
        [ -n "${IDS[$i]}" ] || { fail "$label: task #$i has no id"; continue; }
        got=$(api "$URL/v1/tasks/${IDS[$i]}?wait=5" || true)
        st=$(jq -r '.state // empty' <<<"$got" 2>/dev/null || true)
        check "$label: task ${IDS[$i]} succeeded (state '$st') with result == input" \
            jqt --argjson got "${got:-null}" --argjson want "${INPUTS[$i]}" \
                '$got.state == "succeeded" and $got.result == $want'
    done
}
check_results "$A"

# a task running when SIGTERM arrives must be allowed to finish (drain)
SLEEP_MS=1500
resp=$(api -X POST -d "{\"kind\":\"sleep\",\"input\":{\"ms\":$SLEEP_MS}}" "$URL/v1/tasks" || true)
SLEEP_ID=$(jq -r '.id // empty' <<<"$resp" 2>/dev/null || true)
st=""
deadline=$(( $(date +%s) + 10 ))
while [ -n "$SLEEP_ID" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    st=$(api "$URL/v1/tasks/$SLEEP_ID" | jq -r '.state // empty' 2>/dev/null || true)
    [ "$st" = pending ] || break
    sleep 0.05
done
check "sleep task $SLEEP_ID is running before stop (state '$st')" test "$st" = running

log "stop -t $STOP_TIMEOUT $A"
stop "$A"
STOP_A=$STOP_S
check "the stop waited for the running sleep task (${STOP_A}s >= ~${SLEEP_MS}ms)" \
    awk -v s="$STOP_A" 'BEGIN{exit !(s >= 0.5)}'
check "database is on the host volume" bash -c 'ls "$1"/*.db >/dev/null 2>&1' _ "$VOLUME_HOST"

# ------------------------------------------------------------ 6. second container, same volume
B=warmpool-test-b-$RUN_ID
log "run $B on the same volume, started as root (plain run flags${B_OPTS[*]:+, }${B_OPTS[*]})"
start "$B" "${B_OPTS[@]}"
READY_B=$READY
check "$B: PID 1 is warmpool (got '$(E exec "$B" cat /proc/1/comm 2>/dev/null)')" \
    test "$(E exec "$B" cat /proc/1/comm 2>/dev/null)" = warmpool
check "$B: every warmpool process runs as uid $APP_UID (got '$(warmpool_uids "$B")')" \
    test "$(warmpool_uids "$B")" = "$APP_UID"
check_results "$B"
got=$(api "$URL/v1/tasks/$SLEEP_ID?wait=5" || true)
check "$B: sleep task $SLEEP_ID (running at SIGTERM) succeeded: $(jq -c '{state,result,error}' <<<"$got" 2>/dev/null || echo "$got")" \
    jqt --argjson got "${got:-null}" --argjson ms "$SLEEP_MS" \
        '$got.state == "succeeded" and $got.result.slept_ms == $ms'
list=$(api "$URL/v1/tasks?limit=1000" || true)
n=$(jq -r '.tasks | length' <<<"$list" 2>/dev/null || echo 0)
want=$(( ${#INPUTS[@]} + 1 ))   # before the lookup task
check "$B: GET /v1/tasks lists all $want tasks (got $n)" test "$n" = "$want"
if [ ${#B_OPTS[@]} -gt 0 ]; then
    # the plugin loads in the image (its symbols resolve against the binary)
    resp=$(api -X POST -d '{"kind":"lookup","input":{"slice":0,"of":1}}' "$URL/v1/tasks" || true)
    lid=$(jq -r '.id // empty' <<<"$resp" 2>/dev/null || true)
    got=$(api "$URL/v1/tasks/${lid:-0}?wait=10" || true)
    check "$B: a task of the example plugin's kind 'lookup' succeeded: $(jq -c '{state,error}' <<<"$got" 2>/dev/null || echo "$resp")" \
        jqt --argjson got "${got:-null}" '$got.state == "succeeded"'
fi
stop "$B"
STOP_B=$STOP_S

# ------------------------------------------------------------ 7. volumes and users
# Each case: a container on its own /data, checked, then stopped. Where a host dir's
# owner is checked, the engine must map container uids to the host's as they are
# (rootful, no user namespace), which is the case when this script runs as root.
T_USERS=$(now)
round_trip() {   # NAME: an echo task succeeds through POST ?wait
    local got
    got=$(api -X POST -d '{"kind":"echo","input":{"case":"'"$1"'"}}' "$URL/v1/tasks?wait=10" || true)
    check "$1: an echo task succeeds ($(jq -c '{state,error}' <<<"$got" 2>/dev/null || echo "$got"))" \
        jqt --argjson got "${got:-null}" '$got.state == "succeeded"'
}
new_dir() {      # a new host dir, owned by root, mode 0755, removed at the end
    local d
    d=$(mktemp -d /var/tmp/warmpool-docker-test.XXXXXX)
    chmod 0755 "$d"
    DIRS+=("$d")
    echo "$d"
}
# run_to_exit NAME [run args...]: a container that must stop by itself; sets CODE, OUT
run_to_exit() {
    local name=$1; shift
    NAMES+=("$name")
    OUT=$(timeout 60 "$ENGINE" "${PODMAN_OPTS[@]}" run --pull=never --name "$name" \
          "${RUN_OPTS[@]}" "$@" "$TAG" 2>&1) && CODE=0 || CODE=$?
}
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1

# a named volume, started as root
V=warmpool-test-vol-$RUN_ID; VOLUMES+=("$V")
C=warmpool-test-c-$RUN_ID
log "run $C: a new named volume ($V), started as root"
VOL_SPEC="$V:/data" start "$C"
check "$C: every warmpool process runs as uid $APP_UID (got '$(warmpool_uids "$C")')" \
    test "$(warmpool_uids "$C")" = "$APP_UID"
round_trip "$C"
stop "$C"

# a host directory owned by root (the usual bind mount), started as root
D_DIR=$(new_dir)
D=warmpool-test-d-$RUN_ID
log "run $D: a root-owned host dir ($D_DIR), started as root"
VOL_SPEC="$D_DIR:/data$VOL_OPT" start "$D"
check "$D: every warmpool process runs as uid $APP_UID (got '$(warmpool_uids "$D")')" \
    test "$(warmpool_uids "$D")" = "$APP_UID"
round_trip "$D"
stop "$D"
if [ "$IS_ROOT" = 1 ]; then
    check "$D: the host dir and the database now belong to uid $APP_UID" \
        bash -c '[ "$(stat -c %u "$1")" = "$2" ] && [ "$(stat -c %u "$1/warmpool.db")" = "$2" ]' \
        _ "$D_DIR" "$APP_UID"
fi

# --user with an arbitrary uid, on a root-owned host dir: stops, saying what to chown
U=12345
E_DIR=$(new_dir)
run_to_exit "warmpool-test-e-$RUN_ID" --user "$U" -v "$E_DIR:/data$VOL_OPT"
check "--user $U on a root-owned /data stops (exit $CODE) saying to chown it to $U: ${OUT//$'\n'/ | }" \
    bash -c '[ "$1" != 0 ] && grep -q "chown -R $2" <<<"$3" && grep -q "not writable by uid $2" <<<"$3"' \
    _ "$CODE" "$U" "$OUT"

# --user with an arbitrary uid, on a host dir that uid owns
F_DIR=$(new_dir)
[ "$IS_ROOT" = 1 ] && chown "$U:$U" "$F_DIR"
[ "$IS_ROOT" = 1 ] || chmod 0777 "$F_DIR"
F=warmpool-test-f-$RUN_ID
log "run $F: --user $U:$U on a host dir uid $U owns"
VOL_SPEC="$F_DIR:/data$VOL_OPT" start "$F" --user "$U:$U"
check "$F: every warmpool process runs as uid $U (got '$(warmpool_uids "$F")')" \
    test "$(warmpool_uids "$F")" = "$U"
round_trip "$F"
stop "$F"

# --user with an arbitrary uid (group 0, as OpenShift runs it) on a new named volume
V2=warmpool-test-vol2-$RUN_ID; VOLUMES+=("$V2")
G=warmpool-test-g-$RUN_ID
log "run $G: --user $U (group 0) on a new named volume ($V2)"
VOL_SPEC="$V2:/data" start "$G" --user "$U"
check "$G: every warmpool process runs as uid $U (got '$(warmpool_uids "$G")')" \
    test "$(warmpool_uids "$G")" = "$U"
round_trip "$G"
stop "$G"

# a read-only /data (here a root-owned dir mounted :ro): the chown cannot help; stops
I_DIR=$(new_dir)
run_to_exit "warmpool-test-i-$RUN_ID" -v "$I_DIR:/data:ro${VOL_OPT:+,${VOL_OPT#:}}"
check "a read-only /data stops (exit $CODE) saying uid $APP_UID cannot write it: ${OUT//$'\n'/ | }" \
    bash -c '[ "$1" != 0 ] && grep -q "not writable by uid $2, even after chown" <<<"$3"' \
    _ "$CODE" "$APP_UID" "$OUT"

# root without the capabilities to drop privileges: stops, saying why
run_to_exit "warmpool-test-h-$RUN_ID" --cap-drop ALL -v "$VOLUME_HOST:/data$VOL_OPT"
check "root with --cap-drop ALL stops (exit $CODE) and says to use --user $APP_UID: ${OUT//$'\n'/ | }" \
    bash -c '[ "$1" != 0 ] && grep -q -- "--user $2:$2" <<<"$3"' _ "$CODE" "$APP_UID" "$OUT"
T_USERS=$(since "$T_USERS")

# ------------------------------------------------------------ 8. PostgreSQL, two replicas
# docker/compose.postgres.yaml's set-up with the engine's own commands: PostgreSQL (its
# image built from Debian's postgresql-15, docker/postgres/Dockerfile) and two warmpool
# replicas on one network, the database reached by its name "db". A task submitted to one
# replica runs and is seen from the other; the tasks spread over both replicas' workers; a
# replica stopped leaves the store at once. Both compose files are first validated
# against the Compose Specification's JSON schema (dclint's copy, from the npm registry).
T_PG=$(now)
if [ "${PG_TEST:-1}" = 1 ]; then
    # the compose files, against the schema
    DCLINT_DIR=${DCLINT_DIR:-/var/cache/warmpool-dclint}
    schema=$DCLINT_DIR/node_modules/dclint/schemas/compose.schema.json
    if [ ! -s "$schema" ] && command -v npm >/dev/null 2>&1; then
        mkdir -p "$DCLINT_DIR"
        (cd "$DCLINT_DIR" && timeout 300 npm install --no-audit --no-fund --silent dclint@3.1.0 \
            >/dev/null 2>&1) || log "npm install dclint failed: the compose files are not validated"
    fi
    for f in "$ROOT/docker/compose.yaml" "$ROOT/docker/compose.postgres.yaml"; do
        if [ -s "$schema" ]; then
            out=$(/usr/bin/python3 - "$schema" "$f" 2>&1 <<'PYEOF'
import json, sys, warnings
import jsonschema, yaml
warnings.simplefilter("ignore")
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
errs = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(doc))
for e in errs:
    print("/".join(map(str, e.absolute_path)) or "(top)", ":", e.message)
sys.exit(1 if errs else 0)
PYEOF
            ) && rc=0 || rc=$?
            check "${f#"$ROOT"/} is valid against the Compose Specification schema${out:+: ${out//$'\n'/ | }}" \
                test "$rc" = 0
        else
            fail "${f#"$ROOT"/}: no Compose Specification schema to validate against (npm?)"
        fi
    done

    PG_TAG=${PG_TAG:-localhost/warmpool-postgres:test}
    log "building $PG_TAG from docker/postgres/Dockerfile"
    t=$(now)
    # shellcheck disable=SC2086
    if timeout "$BUILD_TIMEOUT" "$ENGINE" "${PODMAN_OPTS[@]}" build "${build_opts[@]}" \
            -f "$ROOT/docker/postgres/Dockerfile" -t "$PG_TAG" ${BUILD_ARGS:-} "$ROOT" >&2; then
        pass "PostgreSQL image builds from Debian's postgresql-15 ($(since "$t")s)"
    else
        fail "PostgreSQL image builds"
    fi
    NET=warmpool-test-net-$RUN_ID; NETWORKS+=("$NET")
    E network create "$NET" >/dev/null || fail "network create $NET"
    PW=pw-$RANDOM$RANDOM$RANDOM
    DB=warmpool-test-db-$RUN_ID; NAMES+=("$DB")
    E run -d --pull=never --name "$DB" --network "$NET" --network-alias db "${RUN_OPTS[@]}" \
        -e POSTGRES_USER=warmpool -e POSTGRES_PASSWORD="$PW" -e POSTGRES_DB=warmpool \
        "$PG_TAG" >/dev/null || fail "run $DB"
    deadline=$(( $(date +%s) + 60 ))
    until E exec "$DB" pg_isready -h 127.0.0.1 -q 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.5
    done
    check "PostgreSQL ($DB) accepts connections" E exec "$DB" pg_isready -h 127.0.0.1 -q
    PORTS=()
    for r in a b; do
        p=$((HOST_PORT + 1 + RANDOM % 500))
        while ! port_free "$p"; do p=$((p + 1)); done
        PORTS+=("$p")
        n=warmpool-test-pg-$r-$RUN_ID; NAMES+=("$n")
        # as compose.postgres.yaml runs them: uid 10001, read-only, no capabilities
        E run -d --pull=never --name "$n" --network "$NET" -p "127.0.0.1:$p:8080" \
            "${RUN_OPTS[@]}" --user 10001:10001 --read-only --tmpfs /tmp --cap-drop ALL \
            --security-opt no-new-privileges \
            -e "WARMPOOL_DB=postgresql://warmpool:$PW@db:5432/warmpool" \
            -e WARMPOOL_LEASE_MS=3000 -e WARMPOOL_WORKERS=2 "$TAG" >/dev/null || fail "run $n"
    done
    URL_A=http://127.0.0.1:${PORTS[0]} URL_B=http://127.0.0.1:${PORTS[1]}
    ready=0
    deadline=$(( $(date +%s) + WAIT_SECS ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if curl -fsS -m 2 -o /dev/null "$URL_A/readyz" 2>/dev/null &&
            curl -fsS -m 2 -o /dev/null "$URL_B/readyz" 2>/dev/null; then ready=1; break; fi
        sleep 0.2
    done
    check "both replicas on PostgreSQL answer /readyz" test "$ready" = 1
    if [ "$ready" = 1 ]; then
        ni=$(api "$URL_A/v1/stats" | jq -r '.instances | length' 2>/dev/null || echo 0)
        check "replica a lists 2 live instances (got $ni)" test "$ni" = 2
        # submitted to a, waited for and read on b
        resp=$(api -X POST -d '{"kind":"echo","input":{"across":"replicas"}}' "$URL_A/v1/tasks" || true)
        xid=$(jq -r '.id // empty' <<<"$resp" 2>/dev/null || true)
        got=$(api "$URL_B/v1/tasks/${xid:-0}?wait=10" || true)
        check "a task submitted to replica a is done, and seen from replica b ($(jq -c '{id,state,result}' <<<"$got" 2>/dev/null || echo "$got"))" \
            jqt --argjson got "${got:-null}" '$got.state == "succeeded" and $got.result.across == "replicas"'
        # twelve 300 ms tasks submitted to b alone: both replicas' workers run some
        for _ in $(seq 12); do
            api -o /dev/null -X POST -d '{"kind":"sleep","input":{"ms":300}}' "$URL_B/v1/tasks" || true
        done
        deadline=$(( $(date +%s) + 30 ))
        done_n=0
        while [ "$(date +%s)" -lt "$deadline" ]; do
            done_n=$(api "$URL_A/v1/stats" | jq -r '.tasks.succeeded' 2>/dev/null || echo 0)
            [ "$done_n" -ge 13 ] && break
            sleep 0.2
        done
        ran_a=$(api "$URL_A/v1/stats" | jq '[.workers[].tasks_done] | add' 2>/dev/null || echo 0)
        ran_b=$(api "$URL_B/v1/stats" | jq '[.workers[].tasks_done] | add' 2>/dev/null || echo 0)
        check "13 tasks done, run by both replicas' workers (a: $ran_a, b: $ran_b)" \
            bash -c '[ "$1" -ge 13 ] && [ "$2" -gt 0 ] && [ "$3" -gt 0 ]' _ "$done_n" "$ran_a" "$ran_b"
        leaked=$( { E logs "warmpool-test-pg-a-$RUN_ID"; E logs "warmpool-test-pg-b-$RUN_ID"; } 2>&1 | grep -c -- "$PW" || true)
        check "no replica logs the database password (lines: $leaked)" test "$leaked" = 0
        # a replica stopped leaves the store: the other lists one instance at once
        stop "warmpool-test-pg-a-$RUN_ID"
        ni=$(api "$URL_B/v1/stats" | jq -r '.instances | length' 2>/dev/null || echo 0)
        check "after replica a stopped, replica b lists 1 live instance (got $ni)" test "$ni" = 1
        got=$(api -X POST -d '{"kind":"echo","input":"after"}' "$URL_B/v1/tasks?wait=10" || true)
        check "replica b goes on alone ($(jq -c '{state}' <<<"$got" 2>/dev/null || echo "$got"))" \
            jqt --argjson got "${got:-null}" '$got.state == "succeeded"'
    fi
fi
T_PG=$(since "$T_PG")

[ "$FAILED" = 0 ] || show_logs

# ------------------------------------------------------------ 7. summary
echo "SUMMARY engine=$ENGINE image=$TAG size=${SIZE_MB}MB (limit ${MAX_SIZE_MB}MB)" \
     "ready=${READY_A}s/${READY_B}s (target 1s) stop=${STOP_A}s/${STOP_B}s (timeout ${STOP_TIMEOUT}s)" \
     "setup=${T_SETUP}s${T_BOOTSTRAP:+ (debootstrap ${T_BOOTSTRAP}s)} build=${T_BUILD}s" \
     "volumes+users=${T_USERS}s postgres+replicas=${T_PG}s total=$(since "$T0")s"
finish
