#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers flashsale needs are reachable,
# installing (Debian packages) and starting them when they are not.
#
# Usage:
#   scripts/services.sh [start]   ensure both services answer (idempotent; default)
#   scripts/services.sh status    only report whether they answer (changes nothing)
#   scripts/services.sh stop      stop the servers this script started from .data/
#                                 (never the machine's own services)
#   scripts/services.sh cluster [start|stop|status]
#                                 a local Redis Cluster for FLASHSALE_REDIS_MODE=cluster:
#                                 3 masters (and CLUSTER_REPLICAS replicas each) on
#                                 127.0.0.1, ports CLUSTER_PORT.. (default 7000), data in
#                                 .data/redis-cluster/<port>/; `start` prints the REDIS_URL
#
# Environment:
#   DATABASE_URL  default postgres://postgres@127.0.0.1:5432/flashsale
#   REDIS_URL     default redis://127.0.0.1:6379/0
#   SERVICES_WAIT_SECS  how long to wait for a server to answer (default 30)
#   CLUSTER_PORT      first port of the local cluster (default 7000)
#   CLUSTER_REPLICAS  replicas per master of the local cluster (default 0; 1 gives 6 nodes)
#
# Only loopback targets (127.0.0.1, localhost, ::1) are installed/started; for
# any other host the script only checks reachability. Servers it starts keep
# their data inside the checkout, in the git-ignored .data/ folder:
#   .data/pg/     PostgreSQL cluster (log: .data/pg.log)
#   .data/redis/  Redis AOF + log + pid file
# When run as root and the `postgres` system user cannot traverse the path to
# the checkout, the cluster goes to /var/tmp/flashsale-pg-<hash of repo path>.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
DATA_ROOT=$REPO_ROOT/.data
REDIS_DIR=$DATA_ROOT/redis
PG_DIR_DEFAULT=$DATA_ROOT/pg
REPO_HASH=$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)
PG_DIR_FALLBACK=/var/tmp/flashsale-pg-$REPO_HASH
WAIT_SECS=${SERVICES_WAIT_SECS:-30}
INSTALL_LOG=$DATA_ROOT/install.log

DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/flashsale}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}

APT_UPDATED=0

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] warning: %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

# Shorten paths inside the checkout for messages.
rel() {
    local p=$1
    if [[ $p == "$REPO_ROOT"/* ]]; then printf '%s' "${p#"$REPO_ROOT"/}"; else printf '%s' "$p"; fi
}

# ---------------------------------------------------------------- URL parsing

urldecode() {
    if [[ $1 == *%* ]]; then printf '%b' "${1//%/\\x}"; else printf '%s' "$1"; fi
}

# parse_url URL DEFAULT_PORT -> sets U_USER U_PASS U_HOST U_PORT U_PATH
parse_url() {
    local url=$1 def_port=$2 rest authority auth hostport
    rest=${url#*://}
    authority=${rest%%[/?#]*}
    U_PATH=${rest:${#authority}}
    U_PATH=${U_PATH%%[?#]*}
    U_PATH=${U_PATH#/}
    if [[ $authority == *@* ]]; then
        auth=${authority%@*}
        hostport=${authority##*@}
    else
        auth=
        hostport=$authority
    fi
    if [[ $auth == *:* ]]; then
        U_USER=${auth%%:*}
        U_PASS=${auth#*:}
    else
        U_USER=$auth
        U_PASS=
    fi
    U_USER=$(urldecode "$U_USER")
    U_PASS=$(urldecode "$U_PASS")
    U_PATH=$(urldecode "$U_PATH")
    if [[ $hostport == \[* ]]; then # [ipv6]:port
        U_HOST=${hostport#\[}
        U_HOST=${U_HOST%%]*}
        rest=${hostport#*]}
        U_PORT=${rest#:}
    elif [[ $hostport == *:*:* ]]; then # bare ipv6 without port
        U_HOST=$hostport
        U_PORT=
    elif [[ $hostport == *:* ]]; then
        U_HOST=${hostport%%:*}
        U_PORT=${hostport#*:}
    else
        U_HOST=$hostport
        U_PORT=
    fi
    [[ -n $U_HOST ]] || U_HOST=127.0.0.1
    [[ -n $U_PORT ]] || U_PORT=$def_port
    if ! [[ $U_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$U_PORT < 1 || 10#$U_PORT > 65535)); then
        die "invalid port '$U_PORT' in URL '$url'"
    fi
    U_PORT=$((10#$U_PORT))
}

# HOST:PORT for messages ([::1]:PORT for IPv6).
hp() {
    if [[ $1 == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi
}

is_loopback() {
    case ${1,,} in
    127.0.0.1 | localhost | ::1) return 0 ;;
    *) return 1 ;;
    esac
}

# Address to bind/listen on for a loopback target host.
listen_addr() {
    if [[ $1 == ::1 ]]; then printf '::1'; else printf '127.0.0.1'; fi
}

# ------------------------------------------------------------------ utilities

tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "root privileges are needed to run '$*' but sudo is not installed; run this script as root or install the packages yourself"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install these packages yourself: $*"
    mkdir -p "$DATA_ROOT"
    log "installing Debian packages: $* (output in $(rel "$INSTALL_LOG"))"
    if [[ $APT_UPDATED -eq 0 ]]; then
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update >>"$INSTALL_LOG" 2>&1 9>&-; then
            tail -n 20 "$INSTALL_LOG" >&2 || true
            die "apt-get update failed (see $INSTALL_LOG)"
        fi
        APT_UPDATED=1
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >>"$INSTALL_LOG" 2>&1 9>&-; then
        tail -n 20 "$INSTALL_LOG" >&2 || true
        die "apt-get install $* failed (see $INSTALL_LOG)"
    fi
}

# Run a command as USER (root only), from / so the tools do not complain about
# an unreadable working directory.
run_as() {
    local user=$1
    shift
    if command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$user" -- "$@")
    else
        (cd / && su -s /bin/sh "$user" -c "$(printf '%q ' "$@")")
    fi
}

# Run a command as the owner of a PostgreSQL data directory.
run_as_owner() {
    local dir=$1 owner
    shift
    owner=$(stat -c %U "$dir")
    if is_root; then
        [[ $owner != root ]] || die "$dir is owned by root; PostgreSQL cannot run as root"
        run_as "$owner" "$@"
    else
        [[ $owner == "$(id -un)" ]] ||
            die "$dir belongs to user '$owner'; run this script as '$owner' or as root"
        "$@"
    fi
}

# wait_ready NAME PROBE_FN ARGS... : poll PROBE_FN until it prints "ready"/"auth". When
# WAIT_ALIVE names a function, it is asked too, and a server that has exited ends the wait
# at once instead of at the deadline.
WAIT_ALIVE=
wait_ready() {
    local state deadline
    shift # NAME is only for readability at call sites
    deadline=$((SECONDS + WAIT_SECS))
    while :; do
        state=$("$@")
        [[ $state == ready || $state == auth ]] && return 0
        ((SECONDS < deadline)) || return 1
        if [[ -n $WAIT_ALIVE ]] && ! "$WAIT_ALIVE"; then
            return 1
        fi
        sleep 0.5
    done
}

# What this run started, so that a failure later in the run stops it again instead of
# leaving a half-started set of services behind.
STARTED_PG=
on_exit() {
    local status=$?
    if ((status != 0)) && [[ -n $STARTED_PG ]]; then
        warn "stopping the PostgreSQL this run started, since the run failed"
        stop_postgres >/dev/null 2>&1 || true
    fi
}
trap on_exit EXIT

# ----------------------------------------------------------------- PostgreSQL

# Newest Debian server bin dir (/usr/lib/postgresql/<major>/bin), or a PATH one.
pg_newest_bindir() {
    local d dirs=()
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && dirs+=("$d")
    done
    if ((${#dirs[@]})); then
        printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
        return 0
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname -- "$(command -v initdb)"
    fi
    return 0
}

# Bin dir matching an existing cluster's major version.
pg_bindir_for() {
    local dir=$1 major d
    major=$(<"$dir/PG_VERSION")
    if [[ -x /usr/lib/postgresql/$major/bin/pg_ctl ]]; then
        printf '%s' "/usr/lib/postgresql/$major/bin"
        return 0
    fi
    d=$(pg_newest_bindir)
    if [[ -n $d ]] && "$d/postgres" --version 2>/dev/null | grep -Eq "[^0-9]$major(\.|$)"; then
        printf '%s' "$d"
        return 0
    fi
    die "the cluster in $dir was created by PostgreSQL $major, whose binaries are not installed (apt-get install postgresql-$major, or remove $dir)"
}

# A client tool (psql, pg_isready, ...) that actually works; empty if none.
pg_tool() {
    local name=$1 d
    if command -v "$name" >/dev/null 2>&1 && "$name" --version >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [[ -x $d/$name ]]; then
            printf '%s' "$d/$name"
            return 0
        fi
    done
    return 0
}

# pg_probe HOST PORT -> ready | starting | down
pg_probe() {
    local isready rc=0
    isready=$(pg_tool pg_isready)
    if [[ -n $isready ]]; then
        "$isready" -q -h "$1" -p "$2" -t 3 >/dev/null 2>&1 || rc=$?
        case $rc in
        0) echo ready ;;
        1) echo starting ;;
        *) echo down ;;
        esac
    elif tcp_open "$1" "$2"; then
        echo ready
    else
        echo down
    fi
}

# PID of a live postmaster using DIR, if any (empty otherwise).
pg_dir_pid() {
    local dir=$1 pid
    [[ -r $dir/postmaster.pid ]] || return 0
    pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]]; then printf '%s' "$pid"; fi
    return 0
}

pg_dir_port() {
    sed -n 4p "$1/postmaster.pid" 2>/dev/null || true
}

# Our cluster dir that currently serves PORT, if any.
pg_our_dir_on_port() {
    local dir
    for dir in "$PG_DIR_DEFAULT" "$PG_DIR_FALLBACK"; do
        if [[ -n $(pg_dir_pid "$dir") && $(pg_dir_port "$dir") == "$1" ]]; then
            printf '%s' "$dir"
            return 0
        fi
    done
    return 0
}

# psql wrapper: pg_psql HOST PORT USER PASSWORD DB [psql args...] (SQL on stdin)
pg_psql() {
    local host=$1 port=$2 user=$3 pass=$4 db=$5 psql
    shift 5
    psql=$(pg_tool psql)
    [[ -n $psql ]] || die "psql not found"
    PGPASSWORD=$pass PGCONNECT_TIMEOUT=5 "$psql" -X -q -w -v ON_ERROR_STOP=1 \
        -h "$host" -p "$port" -U "$user" -d "$db" "$@"
}

ensure_psql() {
    if [[ -z $(pg_tool psql) ]]; then
        apt_install postgresql-client
        [[ -n $(pg_tool psql) ]] || die "psql still not available after installing postgresql-client"
    fi
}

# Online Debian cluster ("VERSION NAME") listening on PORT, if any.
debian_cluster_on_port() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$1" '$3 == p && $4 ~ /^online/ { print $1, $2; exit }'
}

# Pick (and prepare) the data dir for a new cluster; sets PG_DATA, PG_LOG, PG_NOTE.
pg_prepare_datadir() {
    local comp path rest blocker='' comps=()
    PG_NOTE=
    if [[ -f $PG_DIR_DEFAULT/PG_VERSION ]]; then
        PG_DATA=$PG_DIR_DEFAULT
    elif is_root && [[ -f $PG_DIR_FALLBACK/PG_VERSION ]]; then
        PG_DATA=$PG_DIR_FALLBACK
    else
        PG_DATA=$PG_DIR_DEFAULT
        if is_root; then
            getent passwd postgres >/dev/null ||
                die "PostgreSQL refuses to run as root and there is no 'postgres' system user (the Debian postgresql package creates it)"
            mkdir -p "$DATA_ROOT"
            chmod o+x "$DATA_ROOT"
            # Find the first directory on the way to the checkout that the
            # postgres user cannot traverse.
            path=
            rest=${REPO_ROOT#/}
            IFS=/ read -r -a comps <<<"$rest"
            for comp in / "${comps[@]}"; do
                if [[ $comp == / ]]; then path=/; else path=${path%/}/$comp; fi
                if ! run_as postgres test -x "$path" 2>/dev/null; then
                    blocker=$path
                    break
                fi
            done
            if [[ $blocker == "$REPO_ROOT" ]]; then
                chmod o+x "$REPO_ROOT"
                log "postgres: made the checkout $REPO_ROOT traversable (chmod o+x) for the postgres user"
            elif [[ -n $blocker ]]; then
                PG_DATA=$PG_DIR_FALLBACK
                PG_NOTE=" (the postgres user cannot traverse $blocker, so the cluster lives outside the checkout)"
            fi
        fi
    fi
    PG_LOG=$PG_DATA.log

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        if [[ -d $PG_DATA ]] && [[ -n $(ls -A "$PG_DATA") ]]; then
            die "$PG_DATA exists, is not empty and holds no PostgreSQL cluster (no PG_VERSION); move it away"
        fi
        mkdir -p "$PG_DATA"
        if is_root; then
            local owner
            owner=$(stat -c %U "$PG_DATA")
            [[ $owner == root || $owner == postgres ]] ||
                die "$PG_DATA is owned by '$owner'; remove it and retry"
            chown postgres:postgres "$PG_DATA"
        fi
        chmod 700 "$PG_DATA"
    elif is_root && [[ $(stat -c %U "$PG_DATA") == root ]]; then
        chown -R postgres:postgres "$PG_DATA"
    fi
    touch "$PG_LOG"
    if is_root; then chown "$(stat -c %U "$PG_DATA")" "$PG_LOG"; fi
}

pg_start_own() {
    local host=$1 port=$2 bindir listen locale running_pid
    pg_prepare_datadir

    running_pid=$(pg_dir_pid "$PG_DATA")
    if [[ -n $running_pid ]]; then
        die "the cluster in $PG_DATA is already running (pid $running_pid) on port $(pg_dir_port "$PG_DATA"), not $port; use that port in DATABASE_URL or run 'scripts/services.sh stop' first"
    fi

    if [[ -f $PG_DATA/PG_VERSION ]]; then
        bindir=$(pg_bindir_for "$PG_DATA")
        PG_ACTION=started
    else
        bindir=$(pg_newest_bindir)
        [[ -n $bindir ]] || die "PostgreSQL server binaries not found"
        locale=C
        if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
        if ! run_as_owner "$PG_DATA" "$bindir/initdb" -D "$PG_DATA" -U postgres \
            --auth=trust -E UTF8 --locale="$locale" >>"$PG_LOG" 2>&1; then
            tail -n 20 "$PG_LOG" >&2 || true
            die "initdb failed (see $PG_LOG)"
        fi
        PG_ACTION="initialised and started"
    fi

    listen=$(listen_addr "$host")
    if ! run_as_owner "$PG_DATA" "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$WAIT_SECS" \
        -o "-p $port -c listen_addresses=$listen -k /tmp -c max_connections=200 -c fsync=on" \
        start >/dev/null 2>&1 9>&-; then
        tail -n 20 "$PG_LOG" >&2 || true
        die "pg_ctl start failed for $PG_DATA on port $port (see $PG_LOG)"
    fi
    STARTED_PG=1
    wait_ready postgres pg_probe "$host" "$port" ||
        die "PostgreSQL started from $PG_DATA but does not answer on $(hp "$host" "$port") within ${WAIT_SECS}s (see $PG_LOG)"
}

# Create a LOGIN SUPERUSER role in our own (trust-auth) cluster if missing.
pg_ensure_role() {
    local host=$1 port=$2 role=$3 exists
    exists=$(pg_psql "$host" "$port" postgres "" postgres -tA -v r="$role" \
        <<<"SELECT 1 FROM pg_roles WHERE rolname = :'r';")
    if [[ $exists != 1 ]]; then
        pg_psql "$host" "$port" postgres "" postgres -v r="$role" \
            <<<'CREATE ROLE :"r" LOGIN SUPERUSER;'
    fi
}

ensure_postgres() {
    parse_url "$DATABASE_URL" 5432
    local host=$U_HOST port=$U_PORT user=${U_USER:-postgres} pass=$U_PASS db=$U_PATH
    local state ours installed=0 cluster cver cname managed=0 admin exists out dbnote
    [[ -n $db ]] || db=$user
    PG_ACTION=
    PG_DATA=
    PG_NOTE=

    state=$(pg_probe "$host" "$port")
    if [[ $state == starting ]]; then
        wait_ready postgres pg_probe "$host" "$port" ||
            die "PostgreSQL at $(hp "$host" "$port") is rejecting connections (still starting?) after ${WAIT_SECS}s"
        state=ready
    fi

    if [[ $state != ready ]]; then
        is_loopback "$host" ||
            die "PostgreSQL at $(hp "$host" "$port") (from DATABASE_URL) is not reachable; only loopback hosts (127.0.0.1, localhost, ::1) are started by this script"
        if [[ -n $(pg_tool pg_isready) ]] && tcp_open "$host" "$port"; then
            die "something is listening on $(hp "$host" "$port") but does not answer as PostgreSQL; free the port or change DATABASE_URL"
        fi
        if [[ -z $(pg_newest_bindir) ]]; then
            apt_install postgresql
            installed=1
            [[ -n $(pg_newest_bindir) ]] || die "PostgreSQL server binaries still missing after installing the postgresql package"
            # The package's postinst may have created and started its own
            # cluster (Debian: 'main' on 5432).
            sleep 1
            state=$(pg_probe "$host" "$port")
            if [[ $state == starting ]]; then
                wait_ready postgres pg_probe "$host" "$port" || true
                state=$(pg_probe "$host" "$port")
            fi
        fi
        if [[ $state == ready ]]; then
            ensure_psql
            if pg_psql "$host" "$port" "$user" "$pass" postgres -tA <<<'SELECT 1;' >/dev/null 2>&1; then
                PG_ACTION="started by the postgresql package install"
            else
                # The fresh Debian cluster requires passwords over TCP, so the
                # URL's credentials do not work: retire it and run our own.
                cluster=$(debian_cluster_on_port "$port")
                [[ -n $cluster && $installed -eq 1 ]] ||
                    die "PostgreSQL at $(hp "$host" "$port") answers but rejects user '$user' from DATABASE_URL"
                read -r cver cname <<<"$cluster"
                log "postgres: the package just installed started cluster $cver/$cname on port $port, which rejects passwordless TCP logins; stopping it and setting it to start manually"
                as_root pg_ctlcluster "$cver" "$cname" stop
                printf 'manual\n' | as_root tee "/etc/postgresql/$cver/$cname/start.conf" >/dev/null
                state=down
            fi
        fi
        if [[ $state != ready ]]; then
            pg_start_own "$host" "$port"
        fi
    else
        ours=$(pg_our_dir_on_port "$port")
        if [[ -n $ours ]] && is_loopback "$host"; then
            PG_DATA=$ours
            PG_ACTION="already running"
            PG_NOTE=" (started earlier by this script)"
        else
            PG_ACTION="already running"
            PG_NOTE=" (not managed by this script)"
        fi
    fi

    # Our own clusters use trust auth: make the OS user and the URL user roles.
    ensure_psql
    if [[ -n $PG_DATA ]]; then
        managed=1
        pg_ensure_role "$host" "$port" "$(id -un)"
        [[ $user == postgres ]] || pg_ensure_role "$host" "$port" "$user"
    fi

    # Create the database if missing.
    if [[ $managed -eq 1 ]]; then admin=postgres; else admin=$user; fi
    if ! exists=$(pg_psql "$host" "$port" "$admin" "$pass" postgres -tA -v d="$db" \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'d';" 2>&1); then
        die "cannot query PostgreSQL at $(hp "$host" "$port") as '$admin': $exists"
    fi
    if [[ $exists == 1 ]]; then
        dbnote="database \"$db\" exists"
    else
        if [[ $managed -eq 1 ]]; then
            pg_psql "$host" "$port" "$admin" "$pass" postgres -v d="$db" -v o="$user" \
                <<<'CREATE DATABASE :"d" OWNER :"o";'
        elif ! out=$(pg_psql "$host" "$port" "$admin" "$pass" postgres -v d="$db" \
            <<<'CREATE DATABASE :"d";' 2>&1); then
            die "could not create database \"$db\" on $(hp "$host" "$port") as '$admin': $out"
        fi
        dbnote="database \"$db\" created"
    fi

    if [[ -n $PG_DATA ]]; then
        log "postgres: $PG_ACTION at $(hp "$host" "$port")$PG_NOTE, data in $(rel "$PG_DATA") (log $(rel "$PG_DATA.log")); $dbnote"
    else
        log "postgres: $PG_ACTION at $(hp "$host" "$port")$PG_NOTE; $dbnote"
    fi
}

# ---------------------------------------------------------------------- Redis

# redis_probe HOST PORT PASSWORD -> ready | auth | starting | down
redis_probe() {
    local host=$1 port=$2 pass=$3 out
    if command -v redis-cli >/dev/null 2>&1; then
        if [[ -n $pass ]]; then
            out=$(REDISCLI_AUTH=$pass timeout 5 redis-cli -h "$host" -p "$port" ping 2>&1 || true)
        else
            out=$(timeout 5 redis-cli -h "$host" -p "$port" ping 2>&1 || true)
        fi
    else
        # shellcheck disable=SC2016 # expanded by the inner bash
        out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3; IFS= read -r line <&3; printf "%s" "$line"' _ "$host" "$port" 2>/dev/null || true)
    fi
    case $out in
    *PONG*) echo ready ;;
    *NOAUTH* | *WRONGPASS* | *"invalid password"* | *"without any password"*) echo auth ;;
    *LOADING*) echo starting ;;
    *) echo down ;;
    esac
}

# PID of the redis-server started from .data/redis, if alive.
redis_our_pid() {
    local pid cwd
    [[ -r $REDIS_DIR/redis.pid ]] || return 0
    pid=$(head -n 1 "$REDIS_DIR/redis.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] || return 0
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
    [[ $cwd == "$REDIS_DIR" ]] || return 0
    printf '%s' "$pid"
}

# Whether the redis-server we just started still runs: its pid file appears once it has
# daemonized (allow it 2 s), and names a live redis-server afterwards.
REDIS_STARTED_AT=0
redis_alive() {
    [[ -n $(redis_our_pid) ]] || ((SECONDS - REDIS_STARTED_AT < 2))
}

# "ADDR PORT" our redis listens on (from redis.addr written at start).
redis_our_addr() {
    local pid=$1 title
    if [[ -r $REDIS_DIR/redis.addr ]]; then
        cat "$REDIS_DIR/redis.addr"
        return 0
    fi
    title=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $title =~ ([0-9a-fA-F.:]+|\[[0-9a-fA-F:]+\]):([0-9]+) ]]; then
        printf '%s %s' "${BASH_REMATCH[1]//[\[\]]/}" "${BASH_REMATCH[2]}"
    fi
}

ensure_redis_cli() {
    if ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-tools
        command -v redis-cli >/dev/null 2>&1 || die "redis-cli still not available after installing redis-tools"
    fi
}

ensure_redis() {
    parse_url "$REDIS_URL" 6379
    local host=$U_HOST port=$U_PORT pass=$U_PASS state pid addr bind args action note=''
    state=$(redis_probe "$host" "$port" "$pass")
    if [[ $state == starting ]]; then
        wait_ready redis redis_probe "$host" "$port" "$pass" ||
            die "Redis at $(hp "$host" "$port") is still loading its data after ${WAIT_SECS}s"
        state=ready
    fi

    if [[ $state == ready || $state == auth ]]; then
        [[ $state == auth ]] && note=" (it requires a password: NOAUTH/WRONGPASS with REDIS_URL's credentials)"
        pid=$(redis_our_pid)
        addr=$(if [[ -n $pid ]]; then redis_our_addr "$pid"; fi)
        if [[ -n $pid && ${addr##* } == "$port" ]] && is_loopback "$host"; then
            action="already running at $(hp "$host" "$port") (started earlier by this script), data in $(rel "$REDIS_DIR")"
        else
            action="already running at $(hp "$host" "$port") (not managed by this script)"
        fi
        ensure_redis_cli
        log "redis: $action$note"
        return 0
    fi

    is_loopback "$host" ||
        die "Redis at $(hp "$host" "$port") (from REDIS_URL) is not reachable; only loopback hosts (127.0.0.1, localhost, ::1) are started by this script"
    if command -v redis-cli >/dev/null 2>&1 && tcp_open "$host" "$port"; then
        die "something is listening on $(hp "$host" "$port") but does not answer as Redis; free the port or change REDIS_URL"
    fi

    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after installing the redis-server package"
        # The package's postinst may have started the system redis (6379).
        sleep 1
        state=$(redis_probe "$host" "$port" "$pass")
        if [[ $state == ready || $state == auth || $state == starting ]]; then
            wait_ready redis redis_probe "$host" "$port" "$pass" ||
                die "Redis at $(hp "$host" "$port") (started by the package) does not answer"
            ensure_redis_cli
            log "redis: started by the redis-server package install at $(hp "$host" "$port") (system service, data in /var/lib/redis)"
            return 0
        fi
    fi
    ensure_redis_cli

    pid=$(redis_our_pid)
    if [[ -n $pid ]]; then
        addr=$(redis_our_addr "$pid")
        die "the Redis server from $(rel "$REDIS_DIR") is already running (pid $pid, ${addr:-unknown address}), not on port $port; use that port in REDIS_URL or run 'scripts/services.sh stop' first"
    fi

    mkdir -p "$REDIS_DIR"
    bind=$(listen_addr "$host")
    args=(--daemonize yes --bind "$bind" --port "$port" --dir "$REDIS_DIR"
        --appendonly yes --appendfsync everysec --save ""
        --logfile "$REDIS_DIR/redis.log" --pidfile "$REDIS_DIR/redis.pid")
    [[ -z $pass ]] || args+=(--requirepass "$pass")
    printf '%s %s\n' "$bind" "$port" >"$REDIS_DIR/redis.addr"
    if ! redis-server "${args[@]}" >>"$REDIS_DIR/redis.log" 2>&1 9>&-; then
        tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
        die "redis-server failed to start (see $REDIS_DIR/redis.log)"
    fi
    REDIS_STARTED_AT=$SECONDS
    WAIT_ALIVE=redis_alive
    if ! wait_ready redis redis_probe "$host" "$port" "$pass"; then
        WAIT_ALIVE=
        tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
        if [[ -z $(redis_our_pid) ]]; then
            die "the redis-server started from $(rel "$REDIS_DIR") exited (see $REDIS_DIR/redis.log)"
        fi
        die "Redis started from $(rel "$REDIS_DIR") but does not answer on $(hp "$host" "$port") within ${WAIT_SECS}s (see $REDIS_DIR/redis.log)"
    fi
    WAIT_ALIVE=
    log "redis: started at $(hp "$host" "$port"), data in $(rel "$REDIS_DIR") (AOF, log $(rel "$REDIS_DIR/redis.log"))"
}

# ----------------------------------------------------------------------- stop

stop_postgres() {
    local dir pid port bindir stopped=0
    for dir in "$PG_DIR_DEFAULT" "$PG_DIR_FALLBACK"; do
        [[ -f $dir/PG_VERSION || -r $dir/postmaster.pid ]] || continue
        pid=$(pg_dir_pid "$dir")
        [[ -n $pid ]] || continue
        port=$(pg_dir_port "$dir")
        bindir=$(pg_bindir_for "$dir")
        if ! run_as_owner "$dir" "$bindir/pg_ctl" -D "$dir" -m fast -w -t "$WAIT_SECS" stop >/dev/null 2>&1; then
            die "pg_ctl stop failed for $dir (see $dir.log)"
        fi
        log "postgres: stopped the server from $(rel "$dir") (pid $pid, port ${port:-?}); data kept"
        stopped=1
    done
    [[ $stopped -eq 1 ]] || log "postgres: nothing to stop (no server from $(rel "$PG_DIR_DEFAULT") is running)"
}

stop_redis() {
    local pid addr host port pass i
    pid=$(redis_our_pid)
    if [[ -z $pid ]]; then
        log "redis: nothing to stop (no server from $(rel "$REDIS_DIR") is running)"
        return 0
    fi
    addr=$(redis_our_addr "$pid")
    host=${addr% *}
    port=${addr##* }
    parse_url "$REDIS_URL" 6379
    pass=$U_PASS
    if [[ -n $port ]] && command -v redis-cli >/dev/null 2>&1 &&
        [[ $(REDISCLI_AUTH=$pass timeout 5 redis-cli -h "$host" -p "$port" info server 2>/dev/null |
            tr -d '\r' | sed -n 's/^process_id://p') == "$pid" ]]; then
        REDISCLI_AUTH=$pass timeout 30 redis-cli -h "$host" -p "$port" shutdown >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < WAIT_SECS * 2; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.5
    done
    [[ ! -d /proc/$pid ]] || die "Redis (pid $pid) from $(rel "$REDIS_DIR") did not stop within ${WAIT_SECS}s"
    rm -f "$REDIS_DIR/redis.addr"
    log "redis: stopped the server from $(rel "$REDIS_DIR") (pid $pid, port ${port:-?}); data kept"
}

# -------------------------------------------------------------- Redis Cluster

CLUSTER_DIR=$DATA_ROOT/redis-cluster
CLUSTER_PORT=${CLUSTER_PORT:-7000}
CLUSTER_REPLICAS=${CLUSTER_REPLICAS:-0}
CLUSTER_MASTERS=3

cluster_ports() {
    local i n=$((CLUSTER_MASTERS * (1 + CLUSTER_REPLICAS)))
    for ((i = 0; i < n; i++)); do printf '%s\n' $((CLUSTER_PORT + i)); done
}

cluster_url() {
    local p urls=()
    for p in $(cluster_ports); do urls+=("redis://127.0.0.1:$p"); done
    local IFS=,
    printf '%s' "${urls[*]}"
}

# cluster_state PORT -> ok | fail | down
cluster_state() {
    local out
    out=$(timeout 5 redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p')
    printf '%s' "${out:-down}"
}

# The pid of the node started from .data/redis-cluster/PORT, if alive.
cluster_node_pid() {
    local pid f=$CLUSTER_DIR/$1/redis.pid
    [[ -r $f ]] || return 0
    pid=$(head -n 1 "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] || return 0
    printf '%s' "$pid"
}

cluster_start() {
    [[ $CLUSTER_REPLICAS =~ ^[0-9]$ ]] || die "CLUSTER_REPLICAS='$CLUSTER_REPLICAS': expected 0-9"
    if ! [[ $CLUSTER_PORT =~ ^[0-9]{1,5}$ ]] || ((CLUSTER_PORT < 1 || CLUSTER_PORT > 55000)); then
        die "CLUSTER_PORT='$CLUSTER_PORT': expected a port from 1 to 55000"
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    ensure_redis_cli
    local port dir state fresh=1 nodes=() started=0 args
    for port in $(cluster_ports); do
        dir=$CLUSTER_DIR/$port
        mkdir -p "$dir"
        [[ -s $dir/nodes.conf ]] && fresh=0
        nodes+=("127.0.0.1:$port")
        if [[ $(redis_probe 127.0.0.1 "$port" "") == ready ]]; then
            [[ -n $(cluster_node_pid "$port") ]] ||
                die "port $port answers as Redis but is not a node from $(rel "$dir"); stop it or set CLUSTER_PORT"
            continue
        fi
        # Node timeout 2 s: a killed master's replica takes over within a few seconds.
        args=(--daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir"
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
            --appendonly yes --appendfsync everysec --save ""
            --logfile "$dir/redis.log" --pidfile "$dir/redis.pid")
        if ! redis-server "${args[@]}" >>"$dir/redis.log" 2>&1 9>&-; then
            tail -n 20 "$dir/redis.log" >&2 || true
            die "redis-server failed to start on port $port (see $(rel "$dir/redis.log"))"
        fi
        started=$((started + 1))
        wait_ready redis redis_probe 127.0.0.1 "$port" "" ||
            die "the cluster node on port $port does not answer within ${WAIT_SECS}s (see $(rel "$dir/redis.log"))"
    done
    state=$(cluster_state "$CLUSTER_PORT")
    if [[ $state != ok ]] && ((fresh)); then
        log "redis cluster: creating $CLUSTER_MASTERS masters with $CLUSTER_REPLICAS replica(s) each on ${nodes[*]}"
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$CLUSTER_REPLICAS" --cluster-yes \
            >>"$CLUSTER_DIR/create.log" 2>&1 ||
            die "redis-cli --cluster create failed (see $(rel "$CLUSTER_DIR/create.log"))"
    fi
    local deadline=$((SECONDS + WAIT_SECS))
    until [[ $(cluster_state "$CLUSTER_PORT") == ok ]]; do
        ((SECONDS < deadline)) ||
            die "the cluster on ports $(cluster_ports | paste -sd,) is not ok after ${WAIT_SECS}s (CLUSTER INFO on $CLUSTER_PORT: $(cluster_state "$CLUSTER_PORT"))"
        sleep 0.5
    done
    if ((started == 0)); then
        log "redis cluster: already running on ports $(cluster_ports | paste -sd,), data in $(rel "$CLUSTER_DIR")"
    else
        log "redis cluster: ok on ports $(cluster_ports | paste -sd,) ($started node(s) started), data in $(rel "$CLUSTER_DIR")"
    fi
    log "redis cluster: FLASHSALE_REDIS_MODE=cluster REDIS_URL=$(cluster_url)"
}

cluster_stop() {
    local port pid i stopped=0
    for port in $(cluster_ports); do
        pid=$(cluster_node_pid "$port")
        [[ -n $pid ]] || continue
        timeout 10 redis-cli -p "$port" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < WAIT_SECS * 2; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.5
        done
        [[ ! -d /proc/$pid ]] || die "cluster node $port (pid $pid) did not stop within ${WAIT_SECS}s"
        stopped=$((stopped + 1))
    done
    log "redis cluster: stopped $stopped node(s) from $(rel "$CLUSTER_DIR"); data kept"
}

cluster_status() {
    local state
    state=$(cluster_state "$CLUSTER_PORT")
    log "redis cluster: $state at 127.0.0.1:$CLUSTER_PORT"
    [[ $state == ok ]]
}

# --------------------------------------------------------------------- status

status() {
    local pg rd
    parse_url "$DATABASE_URL" 5432
    pg=$(pg_probe "$U_HOST" "$U_PORT")
    log "postgres: $pg at $(hp "$U_HOST" "$U_PORT")"
    parse_url "$REDIS_URL" 6379
    rd=$(redis_probe "$U_HOST" "$U_PORT" "$U_PASS")
    log "redis: $rd at $(hp "$U_HOST" "$U_PORT")"
    [[ $pg == ready && ($rd == ready || $rd == auth) ]]
}

# ----------------------------------------------------------------------- main

# Serialise concurrent runs (fd 9 is closed for every daemon we spawn, see
# the `9>&-` redirections, so servers never inherit the lock).
lock() {
    mkdir -p "$DATA_ROOT"
    exec 9>"$DATA_ROOT/.lock"
    flock -w 300 9 || die "another scripts/services.sh is still running (lock $DATA_ROOT/.lock)"
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
    case ${1:-start} in
    start | up)
        lock
        ensure_postgres
        ensure_redis
        ;;
    stop | down)
        lock
        stop_postgres
        stop_redis
        ;;
    status)
        status
        ;;
    cluster)
        case ${2:-start} in
        start | up)
            lock
            cluster_start
            ;;
        stop | down)
            lock
            cluster_stop
            ;;
        status) cluster_status ;;
        *) die "unknown cluster command '$2' (start, stop or status)" ;;
        esac
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        die "unknown command '$1'"
        ;;
    esac
}

main "$@"
