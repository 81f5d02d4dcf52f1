#!/usr/bin/env bash
# Throwaway Redis and PostgreSQL servers on loopback for the store tests and benchmarks.
#
#   scripts/test-services.sh run [--] CMD [ARG...]  start the servers, run CMD with their URLs in
#                                                   its environment, stop them (also on failure or
#                                                   Ctrl-C); exits with CMD's status
#   scripts/test-services.sh start DIR              start the servers with their files in DIR (a
#                                                   new or empty directory); print KEY=VALUE lines
#   scripts/test-services.sh stop DIR               stop what `start DIR` started and remove DIR
#
# For each server that runs, CONTEXTWINDOW_TEST_REDIS_URL / CONTEXTWINDOW_TEST_POSTGRES_DSN is
# set; for one that cannot be started, CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE /
# CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE holds the reason. `run` then exits 1 before running CMD
# (under CI always; locally unless CONTEXTWINDOW_ALLOW_SKIPS=1, when the store tests skip with
# the reason printed).
# A URL already set in the environment is used as it is, and no server is started for it.
#
# Missing servers are installed from Debian's packages (redis-server, postgresql) when running
# as root or with password-less sudo; CONTEXTWINDOW_INSTALL_SERVICES=0 turns that off. The
# servers are processes of this run, in a temporary directory, never the system's services:
#   redis-server --appendonly yes --appendfsync always   (every acknowledged write is fsynced)
#   postgres (initdb + pg_ctl) with the default fsync=on, synchronous_commit=on
set -uo pipefail

PYTHON=${PYTHON:-python3}
log() { echo "test-services: $*" >&2; }

SUDO=
can_be_root() {
    if [ "$(id -u)" = 0 ]; then SUDO=; return 0; fi
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; return 0; fi
    return 1
}

redis_bin() { command -v redis-server 2>/dev/null || { [ -x /usr/bin/redis-server ] && echo /usr/bin/redis-server; }; }
pg_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && echo "$d"
}

# install_packages PKG...: quiet and idempotent; sets INSTALL_ERROR on failure.
INSTALL_ERROR=
install_packages() {
    [ $# -gt 0 ] || return 0
    if [ "${CONTEXTWINDOW_INSTALL_SERVICES:-1}" = 0 ]; then
        INSTALL_ERROR="not installed, and installing is off (CONTEXTWINDOW_INSTALL_SERVICES=0)"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        INSTALL_ERROR="not installed, and apt-get is not available to install it"; return 1
    fi
    if ! can_be_root; then
        INSTALL_ERROR="not installed, and installing needs root (or password-less sudo)"; return 1
    fi
    log "installing $* (Debian packages)..."
    # Keep the packages' own system services from starting: this run starts its own servers.
    local policy=/usr/sbin/policy-rc.d added='' rc out
    if [ ! -e "$policy" ]; then
        $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && added=1
    fi
    out=$(mktemp)
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 update \
        >"$out" 2>&1 &&
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o DPkg::Lock::Timeout=300 \
        install --no-install-recommends "$@" >>"$out" 2>&1
    rc=$?
    [ -n "$added" ] && $SUDO rm -f "$policy"
    if [ $rc != 0 ]; then
        INSTALL_ERROR="apt-get install $* failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    fi
    rm -f "$out"
    return $rc
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis STATE: prints the URL, or returns 1 with the reason on stderr's last line.
start_redis() {
    local state=$1 bin port dir=$1/redis _
    bin=$(redis_bin) || { echo "redis-server not found" >&2; return 1; }
    mkdir -p "$dir"
    for _ in 1 2 3; do
        port=$(free_port) || { echo "cannot pick a free port ($PYTHON)" >&2; return 1; }
        rm -f "$dir/redis.pid"
        if "$bin" --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --appendonly yes --appendfsync always --save '' >"$dir/start.log" 2>&1; then
            for _ in $(seq 1 100); do
                if [ -f "$dir/redis.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                    echo "$port" >"$dir/port"
                    echo "redis://127.0.0.1:$port/0"
                    return 0
                fi
                sleep 0.1
            done
            stop_redis "$state"
        fi
    done
    echo "redis-server did not start: $(tail -q -n 2 "$dir/start.log" "$dir/redis.log" 2>/dev/null |
        tr '\n' ' ')" >&2
    return 1
}

stop_redis() {
    local pidfile=$1/redis/redis.pid pid _
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
pg_as() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

start_postgres() {
    local state=$1 bindir port dir=$1/postgres _
    bindir=$(pg_bindir) || { echo "PostgreSQL server binaries not found" >&2; return 1; }
    if [ "$(id -u)" = 0 ]; then
        id -u postgres >/dev/null 2>&1 || { echo "no 'postgres' user to run the server as" >&2; return 1; }
        command -v runuser >/dev/null 2>&1 || { echo "runuser not found" >&2; return 1; }
    fi
    mkdir -p "$dir"
    echo "$bindir" >"$dir/bindir"
    chmod 755 "$state"
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        pg_as test -w "$dir" || { echo "the postgres user cannot write to $dir (set TMPDIR)" >&2; return 1; }
    fi
    if ! pg_as "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
        echo "initdb failed: $(tail -n 2 "$dir/initdb.log" | tr '\n' ' ')" >&2
        return 1
    fi
    for _ in 1 2 3; do
        port=$(free_port) || { echo "cannot pick a free port ($PYTHON)" >&2; return 1; }
        if pg_as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir" \
            start >/dev/null 2>&1; then
            if pg_as "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres contextwindow_test \
                >>"$dir/postgres.log" 2>&1; then
                echo "$port" >"$dir/port"
                echo "postgresql://postgres@127.0.0.1:$port/contextwindow_test"
                return 0
            fi
            stop_postgres "$state"
        fi
    done
    echo "PostgreSQL did not start: $(tail -n 2 "$dir/postgres.log" 2>/dev/null | tr '\n' ' ')" >&2
    return 1
}

stop_postgres() {
    local dir=$1/postgres bindir
    [ -f "$dir/data/postmaster.pid" ] && [ -f "$dir/bindir" ] || return 0
    bindir=$(cat "$dir/bindir")
    pg_as "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        pg_as "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
}

# start_all STATE: exports the variables into this shell and prints them as KEY=VALUE lines.
start_all() {
    local state=$1 want_redis='' want_pg='' missing=() url err
    mkdir -p "$state" || return 1
    unset CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE
    [ -z "${CONTEXTWINDOW_TEST_REDIS_URL:-}" ] && want_redis=1
    [ -z "${CONTEXTWINDOW_TEST_POSTGRES_DSN:-}" ] && want_pg=1
    [ -n "$want_redis" ] && ! redis_bin >/dev/null && missing+=(redis-server)
    [ -n "$want_pg" ] && ! pg_bindir >/dev/null && missing+=(postgresql)
    if [ ${#missing[@]} -gt 0 ] && ! install_packages "${missing[@]}"; then
        log "$INSTALL_ERROR"
    fi
    if [ -n "$want_redis" ]; then
        if ! redis_bin >/dev/null; then
            export CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE="redis-server ${INSTALL_ERROR:-not found}"
        elif url=$(start_redis "$state" 2>"$state/redis.err"); then
            export CONTEXTWINDOW_TEST_REDIS_URL=$url
            log "redis-server on $url (appendonly yes, appendfsync always)"
        else
            err=$(tail -n 1 "$state/redis.err")
            export CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE="${err:-redis-server did not start}"
        fi
    fi
    if [ -n "$want_pg" ]; then
        if ! pg_bindir >/dev/null; then
            export CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE="postgresql ${INSTALL_ERROR:-not found}"
        elif url=$(start_postgres "$state" 2>"$state/postgres.err"); then
            export CONTEXTWINDOW_TEST_POSTGRES_DSN=$url
            log "PostgreSQL $(basename "$(dirname "$(pg_bindir)")") on $url (fsync on, synchronous_commit on)"
        else
            err=$(tail -n 1 "$state/postgres.err")
            export CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE="${err:-PostgreSQL did not start}"
        fi
    fi
    local var
    for var in CONTEXTWINDOW_TEST_REDIS_URL CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE \
        CONTEXTWINDOW_TEST_POSTGRES_DSN CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE; do
        if [ -n "${!var:-}" ]; then
            echo "$var=${!var}"
            case $var in *UNAVAILABLE) log "${var}: ${!var}" ;; esac
        fi
    done
}

stop_all() {
    local state=$1
    [ -d "$state" ] || return 0
    stop_redis "$state"
    stop_postgres "$state"
    rm -rf "$state"
}

usage() { sed -n '2,10p' "$0" >&2; exit 2; }

# The same rule as tests/conftest.py: a server that cannot start fails `run` unless the caller
# opted out with CONTEXTWINDOW_ALLOW_SKIPS=1, and never allows it under CI.
skips_allowed() { [ "${CONTEXTWINDOW_ALLOW_SKIPS:-}" = 1 ] && [ -z "${CI:-}" ]; }

case "${1:-}" in
    run)
        shift
        [ "${1:-}" = -- ] && shift
        [ $# -gt 0 ] || usage
        STATE=$(mktemp -d "${TMPDIR:-/tmp}/contextwindow-services.XXXXXX") || exit 1
        trap 'stop_all "$STATE"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM HUP
        start_all "$STATE" >/dev/null
        if [ -n "${CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE:-}${CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE:-}" ] &&
            ! skips_allowed; then
            log "a test server did not start, so its store tests cannot run: failing now" \
                "(CONTEXTWINDOW_ALLOW_SKIPS=1 runs them as skips, outside CI)"
            exit 1
        fi
        "$@"
        exit $?
        ;;
    start)
        [ $# = 2 ] || usage
        if ! start_all "$2"; then exit 1; fi
        ;;
    stop)
        [ $# = 2 ] || usage
        stop_all "$2"
        ;;
    *) usage ;;
esac
