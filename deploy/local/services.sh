#!/usr/bin/env bash
# Local Kafka + Elasticsearch for development and integration tests, without Docker.
#
# Usage: deploy/local/services.sh COMMAND
#   up            fetch (cached), start both services on fresh data, wait until healthy,
#                 then print the `export ABW_...` lines on stdout (eval-able)
#   down          stop both services and delete deploy/local/run/
#   status        print the state of each service; exit 0 only if both are healthy
#   env           print `export ABW_KAFKA_BOOTSTRAP=...` and `export ABW_ES_URL=...`
#   stop-kafka | start-kafka | stop-es | start-es
#                 stop or (re)start one service, keeping its data directory; used by
#                 outage tests. start-* waits until the service is healthy.
#
# Versions live in deploy/local/pom.xml (single source of truth). Maven fetches the
# Kafka jars and the Elasticsearch integ-test distribution from Maven Central into
# deploy/local/.cache/ (kept between runs); data, logs and pid files live under
# deploy/local/run/ (thrown away by `up` and `down`). The pid files (run/kafka/kafka.pid,
# run/es/es.pid) are for people; the script finds each service's processes by their run
# directory in /proc, which also covers a node that is still starting. The helpers shared
# with secure_kafka.sh live in deploy/local/lib/.
#
# Environment (all optional):
#   ABW_KAFKA_PORT=19092             Kafka client listener on 127.0.0.1
#   ABW_KAFKA_CONTROLLER_PORT=19093  KRaft controller listener on 127.0.0.1
#   ABW_ES_PORT=19200                Elasticsearch HTTP on 127.0.0.1
#   ABW_ES_TRANSPORT_PORT=19300      Elasticsearch transport on 127.0.0.1
#   ABW_HEALTH_TIMEOUT=180           seconds to wait for health
#   ABW_STOP_TIMEOUT=60              seconds between SIGTERM and SIGKILL
#   ABW_ES_JAVA_OPTS="-Xms512m -Xmx512m -XX:TieredStopAtLevel=1"
#                                    Elasticsearch JVM options (ES_JAVA_OPTS)
#   ABW_ES_USER=nobody               user Elasticsearch runs as when this script runs as
#                                    root and user namespaces are unavailable
#                                    (Elasticsearch refuses to run as root)
# Use the same values for every command: they are read again each time.
#
# Requires: Linux, bash 4.4+, java >= 17 on PATH, mvn (Maven 3.6+), curl, and from
# util-linux flock and setsid, plus unshare or setpriv when run as root.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/kafka.sh
source "$HERE/lib/kafka.sh"

POM=$HERE/pom.xml
CACHE_DIR=$HERE/.cache # must match <abw.cache> in pom.xml
RUN_DIR=$HERE/run

KAFKA_PORT=${ABW_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${ABW_KAFKA_CONTROLLER_PORT:-19093}
ES_PORT=${ABW_ES_PORT:-19200}
ES_TRANSPORT_PORT=${ABW_ES_TRANSPORT_PORT:-19300}
ES_USER=${ABW_ES_USER:-nobody}
# C1-only JIT halves Elasticsearch's CPU-bound start-up on a busy 2-core machine (outage
# tests restart it); drop -XX:TieredStopAtLevel=1 for benchmarks.
ES_JAVA_OPTS=${ABW_ES_JAVA_OPTS:--Xms512m -Xmx512m -XX:TieredStopAtLevel=1}

KAFKA_RUN=$RUN_DIR/kafka
ES_RUN=$RUN_DIR/es
ES_PID=$ES_RUN/es.pid

kafka_locate "$POM" "$CACHE_DIR"
ES_VERSION=$(pom_property "$POM" elasticsearch.version)
ES_HOME=$CACHE_DIR/elasticsearch-$ES_VERSION

# ---------------------------------------------------------------------------------------
# The services: kafka and elasticsearch (hooks of lib/common.sh)
# ---------------------------------------------------------------------------------------

service_run_dir() {
    case $1 in
    kafka) printf '%s' "$KAFKA_RUN" ;;
    elasticsearch) printf '%s' "$ES_RUN" ;;
    esac
}

service_healthy() {
    case $1 in
    kafka) kafka_answers "127.0.0.1:$KAFKA_PORT" ;;
    elasticsearch) es_healthy ;;
    esac
}

service_logs() {
    case $1 in
    kafka) printf '%s\n' "$KAFKA_RUN/logs/server.log" "$KAFKA_RUN/logs/stdout.log" ;;
    elasticsearch) printf '%s\n' "$ES_RUN/logs/startup.log" "$ES_RUN/logs/abusewatch-local.log" ;;
    esac
}

# Serializes the commands that start or stop services in this checkout (two test sessions
# may run `up` at once). The lock is fd 9; the services themselves are started with fd 9
# closed so that they do not hold it.
take_lock() {
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/services.lock"
    if ! flock -n 9; then
        log "waiting for another services.sh command in this checkout to finish"
        flock -w 900 9 || die "$CACHE_DIR/services.lock is still held after 15 minutes"
    fi
}

# ---------------------------------------------------------------------------------------
# Download (Maven Central through mvn, cached in .cache/)
# ---------------------------------------------------------------------------------------

fetch() {
    # Keyed on pom.xml's content, so any change to it fetches again.
    local done_marker
    done_marker=$CACHE_DIR/.complete-$(cksum <"$POM" | cut -d ' ' -f 1)
    [[ -f $done_marker ]] && return 0
    require_commands mvn
    log "fetching Kafka $KAFKA_VERSION and Elasticsearch $ES_VERSION with Maven (cached after this run)"
    # Start from scratch so an interrupted earlier download cannot leave a partial tree.
    rm -rf "$KAFKA_HOME" "$ES_HOME" "$CACHE_DIR/markers" "$CACHE_DIR"/.complete-*
    mkdir -p "$CACHE_DIR"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" \
        dependency:copy-dependencies@kafka dependency:unpack@elasticsearch \
        </dev/null >"$CACHE_DIR/maven.log" 2>&1; then
        print_tails "$CACHE_DIR/maven.log"
        die "Maven could not fetch the services (is Maven Central reachable?)"
    fi
    [[ -x $ES_HOME/bin/elasticsearch && -d $KAFKA_HOME/libs ]] ||
        die "Maven finished but $KAFKA_HOME or $ES_HOME is incomplete"
    # The Elasticsearch tree must be readable by ABW_ES_USER when we run as root.
    chmod -R a+rX "$ES_HOME"
    touch "$done_marker"
    log "fetched into $CACHE_DIR"
}

# ---------------------------------------------------------------------------------------
# Kafka (KRaft combined broker+controller, single node)
# ---------------------------------------------------------------------------------------

# Fails unless Kafka's ports are free (call only when our Kafka is not running).
kafka_check_ports() {
    require_free_port "$KAFKA_PORT" ABW_KAFKA_PORT
    require_free_port "$KAFKA_CONTROLLER_PORT" ABW_KAFKA_CONTROLLER_PORT
}

kafka_start() {
    if service_running kafka; then
        log "kafka: already running"
        return 0
    fi
    kafka_check_ports
    if [[ ! -f $KAFKA_RUN/server.properties ]]; then
        kafka_configure "$KAFKA_RUN" "$KAFKA_CONTROLLER_PORT" PLAINTEXT="$KAFKA_PORT" <<'EOF'
# Development: topics appear on first use.
auto.create.topics.enable=true
EOF
    fi
    kafka_format "$KAFKA_RUN"
    log "kafka: starting $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
    kafka_launch "$KAFKA_RUN" -Xmx512m -Xms256m
}

# ---------------------------------------------------------------------------------------
# Elasticsearch (integ-test distribution, single node)
# ---------------------------------------------------------------------------------------

# Elasticsearch refuses to run as root. ES_AS_USER is the command prefix that runs it as
# someone else when we are root (empty otherwise):
#  - a user namespace in which it is uid 1000 while keeping root's access to this
#    checkout, wherever it lies (even under /root), and its files stay root's;
#  - if user namespaces are unavailable: ES_USER, which must be able to read the checkout.
USERNS=(unshare --user --map-user=1000 --map-group=1000)
ES_AS_USER=()
es_set_user() {
    ((EUID == 0)) || return 0
    if "${USERNS[@]}" true 2>/dev/null; then
        ES_AS_USER=("${USERNS[@]}")
        return 0
    fi
    id -u "$ES_USER" >/dev/null 2>&1 || die "user '$ES_USER' does not exist (set ABW_ES_USER)"
    ES_AS_USER=(setpriv --reuid="$(id -u "$ES_USER")" --regid="$(id -g "$ES_USER")" --clear-groups)
}

es_configure() {
    mkdir -p "$ES_RUN/config" "$ES_RUN/data" "$ES_RUN/logs" "$ES_RUN/tmp"
    cp -R "$ES_HOME/config/." "$ES_RUN/config/"
    cat >"$ES_RUN/config/elasticsearch.yml" <<EOF
# Generated by deploy/local/services.sh: throwaway single-node development cluster.
cluster.name: abusewatch-local
node.name: abusewatch-local-1
path.data: $ES_RUN/data
path.logs: $ES_RUN/logs
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
discovery.type: single-node
# Never go read-only because the (large, shared) disk has a low free percentage.
cluster.routing.allocation.disk.threshold_enabled: false
# Local use only: no TLS, no authentication (the distribution ships x-pack-security).
xpack.security.enabled: false
# Let tests delete indices by wildcard.
action.destructive_requires_name: false
EOF
    if [[ ${ES_AS_USER[0]:-} == setpriv ]]; then
        chown -R "$ES_USER:" "$ES_RUN"
        "${ES_AS_USER[@]}" test -r "$ES_HOME/bin/elasticsearch" -a -w "$ES_RUN/data" ||
            die "user '$ES_USER' cannot read $ES_HOME or write $ES_RUN; make the checkout" \
                "readable/traversable by that user or set ABW_ES_USER"
    fi
}

# Fails unless Elasticsearch's ports are free (call only when our node is not running).
es_check_ports() {
    require_free_port "$ES_PORT" ABW_ES_PORT
    require_free_port "$ES_TRANSPORT_PORT" ABW_ES_TRANSPORT_PORT
}

es_start() {
    if service_running elasticsearch; then
        log "elasticsearch: already running"
        return 0
    fi
    es_set_user
    es_check_ports
    [[ -f $ES_RUN/config/elasticsearch.yml ]] || es_configure
    log "elasticsearch: starting $ES_VERSION on 127.0.0.1:$ES_PORT"
    # -d daemonizes once the node is up and -p writes the server pid. The launcher runs
    # in the background so Kafka and Elasticsearch start in parallel. The working
    # directory is the logs dir: jvm.options puts gc.log and hs_err files there.
    rm -f "$ES_PID"
    (
        cd "$ES_RUN/logs"
        export ES_JAVA_HOME=$JAVA_HOME_DIR ES_PATH_CONF=$ES_RUN/config ES_TMPDIR=$ES_RUN/tmp
        export ES_JAVA_OPTS=$ES_JAVA_OPTS
        exec nohup setsid "${ES_AS_USER[@]}" "$ES_HOME/bin/elasticsearch" -d -p "$ES_PID" \
            </dev/null >>"$ES_RUN/logs/startup.log" 2>&1 9>&-
    ) &
    await_launch "$ES_RUN" $!
}

es_healthy() {
    curl -fsS --max-time 10 -o /dev/null \
        "http://127.0.0.1:$ES_PORT/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null
}

# ---------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------

print_env() {
    printf 'export ABW_KAFKA_BOOTSTRAP=127.0.0.1:%s\n' "$KAFKA_PORT"
    printf 'export ABW_ES_URL=http://127.0.0.1:%s\n' "$ES_PORT"
}

cmd_up() {
    require_commands curl setsid
    detect_java
    fetch
    # A service that is already running is kept (idempotent `up`); one that is not
    # gets a fresh run directory. Check every port before starting anything.
    if ! service_running kafka; then
        kafka_check_ports
        rm -rf "$KAFKA_RUN"
    fi
    if ! service_running elasticsearch; then
        es_check_ports
        rm -rf "$ES_RUN"
    fi
    kafka_start
    es_start
    wait_healthy kafka elasticsearch
    print_env
}

cmd_down() {
    stop_service kafka
    stop_service elasticsearch
    rm -rf "$RUN_DIR"
    log "run directory removed"
}

cmd_status() {
    local rc=0 name pids endpoint
    detect_java
    for name in kafka elasticsearch; do
        pids=$(service_pids "$(service_run_dir "$name")" | paste -sd ' ')
        case $name in
        kafka) endpoint=127.0.0.1:$KAFKA_PORT ;;
        elasticsearch) endpoint=http://127.0.0.1:$ES_PORT ;;
        esac
        if [[ -z $pids ]]; then
            echo "$name: stopped"
            rc=1
        elif service_healthy "$name"; then
            echo "$name: running (pid $pids), healthy at $endpoint"
        else
            echo "$name: running (pid $pids), NOT healthy at $endpoint"
            rc=1
        fi
    done
    return "$rc"
}

# start-kafka / start-es: restart one service on its existing data (or fresh data if
# it never ran), then wait until it is healthy.
cmd_start_one() {
    require_commands curl setsid
    detect_java
    fetch
    case $1 in
    kafka) kafka_start ;;
    elasticsearch) es_start ;;
    esac
    wait_healthy "$1"
}

main() {
    [[ $# -eq 1 ]] || usage
    case $1 in
    up | down | start-kafka | stop-kafka | start-es | stop-es) take_lock ;;
    esac
    case $1 in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    start-kafka) cmd_start_one kafka ;;
    stop-kafka) stop_service kafka ;;
    start-es) cmd_start_one elasticsearch ;;
    stop-es) stop_service elasticsearch ;;
    -h | --help | help) usage ;;
    *)
        log "unknown command: $1"
        usage
        ;;
    esac
}

main "$@"
