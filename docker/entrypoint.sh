#!/bin/sh
# entrypoint.sh -- the image's entrypoint (/usr/local/bin/warmpool-entrypoint): make the
# data directory usable, then run warmpool as a non-root user. Never runs it as root.
#
#   started as root (the default): /data (the volume, or a host directory bind-mounted
#     there, which usually belongs to root) is given to the service user, uid/gid 10001
#     (only what is not theirs already), and warmpool runs as 10001 through setpriv --
#     as the official PostgreSQL and Redis images do with gosu;
#   started as another uid (docker run --user 12345, OpenShift): warmpool runs as that
#     uid if it can write the database's directory, else this stops (exit 1) with a
#     message saying what to chown.
# warmpool stays PID 1 either way (exec), so SIGTERM reaches it. `healthcheck`, --help
# and a PostgreSQL database (--db postgres://...) need no data and skip the checks. docker/README.md explains the choices.
set -eu

# Checklist: the Dockerfile's APP_UID (the image's user and /data's owner) is the same.
APP_UID=10001
DATA=/data

say() { printf 'warmpool-entrypoint: %s\n' "$*" >&2; }

# The database the flags or the environment name, as warmpool would read them.
db=${WARMPOOL_DB:-./data/warmpool.db}
checks=1
prev=
for arg in "$@"; do
    case $prev in --db) db=$arg ;; esac
    case $arg in
        --db=*) db=${arg#--db=} ;;
        --help|-h|healthcheck) checks=0 ;;
    esac
    prev=$arg
done
# a PostgreSQL database (a URI) has no local file: nothing under /data to check or fix
case $db in
    postgres://*|postgresql://*|POSTGRES://*|POSTGRESQL://*) checks=0 ;;
esac
dir=$(dirname -- "$db")

# Can uid $1 (and gid $2) write the database's directory and the files warmpool keeps
# there? The nearest existing directory counts when the directory is still to be made.
# Prints what it cannot write.
unwritable() {
    d=$dir
    while [ ! -d "$d" ]; do d=$(dirname -- "$d"); done
    for f in "$d" "$db" "$db-wal" "$db-shm" "$db.lock"; do
        [ "$f" != "$d" ] && [ ! -e "$f" ] && continue
        if [ "$(id -u)" = "$1" ]; then
            [ -w "$f" ] || { echo "$f"; return 0; }
        else
            setpriv --reuid="$1" --regid="$2" --clear-groups test -w "$f" \
                || { echo "$f"; return 0; }
        fi
    done
    return 1
}

if [ "$(id -u)" = 0 ]; then
    # setuid and setgid are needed to drop to the service user (and chown to fix /data):
    # --cap-drop ALL takes them away
    caps=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
    if [ $(( 0x${caps:-0} & 0xc0 )) -ne $(( 0xc0 )) ]; then
        say "started as root without the SETUID and SETGID capabilities (--cap-drop ALL?),"
        say "so it cannot drop to the service user, and it never runs warmpool as root."
        say "Either run as the service user: --user $APP_UID:$APP_UID (then $DATA must be"
        say "writable by uid $APP_UID), or keep root with --cap-add CHOWN --cap-add SETUID"
        say "--cap-add SETGID (CHOWN only if $DATA needs fixing)."
        exit 1
    fi
    if [ "$checks" = 1 ] && [ -d "$DATA" ]; then
        # only what is not the service user's already (a large, correct /data costs a
        # walk, no writes); a group already set (the image's 0, for --user) is kept
        find "$DATA" -xdev \! -user "$APP_UID" -exec chown "$APP_UID:$APP_UID" {} + 2>/dev/null \
            || say "could not give everything in $DATA to uid $APP_UID (read-only mount?)"
    fi
    if [ "$checks" = 1 ] && bad=$(unwritable "$APP_UID" "$APP_UID"); then
        say "$bad is not writable by uid $APP_UID, even after chown (a read-only mount, or"
        say "a network file system that maps root to nobody?). Make the directory of the"
        say "database writable by uid $APP_UID on the host: sudo chown -R $APP_UID:$APP_UID DIR"
        exit 1
    fi
    exec setpriv --reuid="$APP_UID" --regid="$APP_UID" --clear-groups --no-new-privs \
        warmpool "$@"
fi

if [ "$checks" = 1 ] && bad=$(unwritable "$(id -u)" "$(id -g)"); then
    say "$bad is not writable by uid $(id -u) (gid $(id -g)), which this container runs as."
    say "Give the directory mounted on $DATA to that uid on the host:"
    say "    sudo chown -R $(id -u):$(id -g) /path/on/the/host"
    say "or start the container as root (without --user): it then makes $DATA uid"
    say "$APP_UID's and drops to that uid itself."
    exit 1
fi
exec warmpool "$@"
