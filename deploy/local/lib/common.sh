# shellcheck shell=bash
# Sourced by deploy/local/services.sh and deploy/local/secure_kafka.sh: messages, Java, ports,
# and the life cycle of a locally run service (find, stop, wait until healthy).
#
# A service is a name for which the sourcing script defines three functions:
#   service_run_dir NAME   its run directory; every java process of the service names it
#                          on its command line, which is how its processes are found
#   service_healthy NAME   true once the service answers
#   service_logs NAME      its log files, one a line (their tails are printed on failure)
#
# Environment (all optional):
#   ABW_HEALTH_TIMEOUT=180   seconds to wait for health
#   ABW_STOP_TIMEOUT=60      seconds between SIGTERM and SIGKILL

HEALTH_TIMEOUT=${ABW_HEALTH_TIMEOUT:-180}
STOP_TIMEOUT=${ABW_STOP_TIMEOUT:-60}

# Progress and errors go to stderr, prefixed with the script's name; stdout is for results.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The comment block at the top of the script (from its second line to the first blank one).
usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

require_commands() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is required but not on PATH"
    done
}

# Value of <NAME>...</NAME> ($2) in the pom file $1 (the version properties).
pom_property() {
    local value
    value=$(sed -n "s:.*<$2>\(.*\)</$2>.*:\1:p" "$1" | head -n 1)
    [[ -n $value ]] || die "property <$2> not found in $1"
    printf '%s' "$value"
}

# Sets JAVA_BIN and JAVA_HOME_DIR from the `java` on PATH; requires Java 17 or newer.
detect_java() {
    require_commands java
    local props spec
    props=$(java -XshowSettings:properties -version 2>&1)
    spec=$(sed -n 's/^ *java\.specification\.version = //p' <<<"$props")
    JAVA_HOME_DIR=$(sed -n 's/^ *java\.home = //p' <<<"$props")
    [[ -n $spec && -n $JAVA_HOME_DIR ]] || die "cannot read the version of 'java' on PATH"
    ((${spec%%.*} >= 17)) || die "Java 17 or newer is required, 'java' on PATH is $spec"
    # shellcheck disable=SC2034 # used by lib/kafka.sh and the sourcing scripts
    JAVA_BIN=$JAVA_HOME_DIR/bin/java
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Fails unless port $1 is free; $2 names the setting that moves it.
require_free_port() {
    ! port_open "$1" || die "port $1 is taken by another process (set $2)"
}

# Pids (one a line) of the java processes whose command line names directory $1. Unlike a
# pid file this also finds a service that is still starting, and never a process of another
# checkout or run directory.
service_pids() {
    local dir=$1/ proc args
    for proc in /proc/[0-9]*; do
        args=()
        mapfile -d '' -t args 2>/dev/null <"$proc/cmdline" || continue
        if ((${#args[@]} > 0)) && [[ ${args[0]##*/} == java && "${args[*]}" == *"$dir"* ]]; then
            printf '%s\n' "${proc#/proc/}"
        fi
    done
}

service_running() {
    [[ -n $(service_pids "$(service_run_dir "$1")") ]]
}

# Returns once the process just launched (pid $2) for run directory $1 is visible as a java
# process of that directory (its exec chain reached java), or has already exited.
await_launch() {
    while kill -0 "$2" 2>/dev/null && [[ -z $(service_pids "$1") ]]; do
        sleep 0.2
    done
}

# Last lines of each existing log file given, for failure reports.
print_tails() {
    local file
    for file in "$@"; do
        [[ -s $file ]] || continue
        log "---- last 40 lines of $file ----"
        tail -n 40 "$file" >&2
    done
}

print_service_logs() {
    local logs
    mapfile -t logs < <(service_logs "$1")
    print_tails "${logs[@]}"
}

# Stops service $1, keeping its data: SIGTERM (Kafka and Elasticsearch shut down cleanly on
# it), then SIGKILL for whatever still runs after STOP_TIMEOUT seconds.
stop_service() {
    local name=$1 dir pids waited=0
    dir=$(service_run_dir "$name")
    mapfile -t pids < <(service_pids "$dir")
    if ((${#pids[@]} == 0)); then
        log "$name: not running"
        return 0
    fi
    log "$name: stopping (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    while mapfile -t pids < <(service_pids "$dir") && ((${#pids[@]} > 0)); do
        if ((waited == STOP_TIMEOUT)); then
            log "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "${pids[@]}" 2>/dev/null || true
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$name: stopped"
}

# Waits until every service named in "$@" is healthy, failing fast if one dies.
wait_healthy() {
    local start=$SECONDS pending=("$@") still name
    while ((${#pending[@]} > 0)); do
        still=()
        for name in "${pending[@]}"; do
            if service_healthy "$name"; then
                log "$name: healthy after $((SECONDS - start))s"
            elif ! service_running "$name"; then
                print_service_logs "$name"
                die "$name exited during startup (logs above)"
            else
                still+=("$name")
            fi
        done
        pending=("${still[@]}")
        ((${#pending[@]} == 0)) && break
        if ((SECONDS - start >= HEALTH_TIMEOUT)); then
            for name in "${pending[@]}"; do
                print_service_logs "$name"
            done
            die "not healthy after ${HEALTH_TIMEOUT}s: ${pending[*]} (logs above)"
        fi
        sleep 1
    done
}
