#!/usr/bin/env bash
# A second, separate Kafka broker with TLS and SASL/SCRAM, for transport-security tests.
#
# Usage: deploy/local/secure_kafka.sh COMMAND DIR
#   up DIR    create certificates and the SCRAM user (first time only), start the broker on
#             DIR/kafka, wait until a SASL_SSL client can talk to it, then print the
#             `export SECURE_KAFKA_...` lines on stdout (eval-able)
#   down DIR  stop the broker (its files stay in DIR)
#   env DIR   print the `export SECURE_KAFKA_...` lines of the broker in DIR
#
# The broker is single-node KRaft (combined broker + controller) with three listeners on
# 127.0.0.1:
#   SSL       TLS with client certificates required (mutual TLS)
#   SASL_SSL  TLS + SASL SCRAM-SHA-512 (user `abusewatch`, random password)
#   CONTROLLER  PLAINTEXT, KRaft only
# It runs from the Kafka jars deploy/local/services.sh fetched into deploy/local/.cache/
# (run `services.sh up` once first). Everything it creates lives in DIR:
#   DIR/tls/ca.pem                CA the clients trust (ssl_cafile)
#   DIR/tls/client.pem, client.key  client certificate and key for the SSL listener
#   DIR/tls/broker.p12            broker keystore (PKCS12), signed by the CA for
#                                 127.0.0.1 and localhost
#   DIR/scram.password            the SCRAM password (mode 600; never printed)
#   DIR/ports                     the ports chosen at `up`, read by `env` and `down`
#   DIR/kafka/                    server.properties, data, logs
#
# Environment (read by `up`; all optional):
#   ABW_SECURE_KAFKA_SSL_PORT=19392         SSL listener
#   ABW_SECURE_KAFKA_SASL_SSL_PORT=19393    SASL_SSL listener
#   ABW_SECURE_KAFKA_CONTROLLER_PORT=19394  KRaft controller listener
#   ABW_HEALTH_TIMEOUT=180                  seconds to wait for health
#   ABW_STOP_TIMEOUT=60                     seconds between SIGTERM and SIGKILL
#
# Requires: Linux, bash 4.4+, java >= 17 on PATH, openssl, setsid. Never reads stdin.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$HERE/pom.xml
CACHE_DIR=$HERE/.cache
SCRAM_USER=abusewatch
SCRAM_MECHANISM=SCRAM-SHA-512
HEALTH_TIMEOUT=${ABW_HEALTH_TIMEOUT:-180}
STOP_TIMEOUT=${ABW_STOP_TIMEOUT:-60}
CERT_DAYS=30

log() { printf 'secure_kafka.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------
# Paths and helpers
# ---------------------------------------------------------------------------------------

# Sets every path below DIR ($1, made absolute).
set_paths() {
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    TLS=$DIR/tls
    RUN=$DIR/kafka
    PORTS_FILE=$DIR/ports
    PASSWORD_FILE=$DIR/scram.password
    KEYSTORE_PASSWORD_FILE=$TLS/keystore.password
}

kafka_home() {
    local version
    version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1)
    [[ -n $version ]] || die "<kafka.version> not found in $POM"
    KAFKA_HOME=$CACHE_DIR/kafka-$version
    [[ -d $KAFKA_HOME/libs ]] || die "$KAFKA_HOME is missing: run deploy/local/services.sh up once to fetch Kafka"
}

detect_java() {
    command -v java >/dev/null 2>&1 || die "'java' (17 or newer) is required on PATH"
    JAVA_BIN=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.home = //p')/bin/java
    [[ -x $JAVA_BIN ]] || die "cannot find the java binary of the 'java' on PATH"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Pids of the java processes whose command line names this broker's run directory.
broker_pids() {
    local proc args
    for proc in /proc/[0-9]*; do
        args=()
        mapfile -d '' -t args 2>/dev/null <"$proc/cmdline" || continue
        if ((${#args[@]} > 0)) && [[ ${args[0]##*/} == java && "${args[*]}" == *"$RUN/"* ]]; then
            printf '%s\n' "${proc#/proc/}"
        fi
    done
}

broker_running() {
    [[ -n $(broker_pids) ]]
}

print_tails() {
    local file
    for file in "$RUN/logs/server.log" "$RUN/logs/stdout.log" "$RUN/logs/format.log"; do
        [[ -s $file ]] || continue
        log "---- last 40 lines of $file ----"
        tail -n 40 "$file" >&2
    done
}

kafka_java() {
    "$JAVA_BIN" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j.configuration="file:$RUN/log4j.properties" -Dkafka.logs.dir="$RUN/logs" \
        -cp "$KAFKA_HOME/libs/*" "$@" </dev/null
}

# ---------------------------------------------------------------------------------------
# Certificates, password, ports (created once per DIR)
# ---------------------------------------------------------------------------------------

# Signs a new key's certificate with the CA: $1 name, $2 subject, $3 extensions.
issue_certificate() {
    local name=$1 subject=$2 extensions=$3
    openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS/$name.key" -out "$TLS/$name.csr" -subj "$subject" \
        2>/dev/null
    printf '%s\n' "$extensions" >"$TLS/$name.ext"
    openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
        -days "$CERT_DAYS" -sha256 -extfile "$TLS/$name.ext" -out "$TLS/$name.pem" 2>/dev/null
    rm -f "$TLS/$name.csr" "$TLS/$name.ext"
    chmod 600 "$TLS/$name.key"
}

make_certificates() {
    [[ -f $TLS/broker.p12 && -f $TLS/client.pem ]] && return 0
    command -v openssl >/dev/null 2>&1 || die "'openssl' is required on PATH"
    log "creating a CA, a broker certificate (127.0.0.1, localhost) and a client certificate in $TLS"
    rm -rf "$TLS"
    mkdir -p "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -out "$TLS/ca.pem" -days "$CERT_DAYS" \
        -sha256 -subj "/CN=abusewatch test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 600 "$TLS/ca.key"
    issue_certificate broker "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
    issue_certificate client "/CN=abusewatch-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    (umask 077 && openssl rand -hex 16 >"$KEYSTORE_PASSWORD_FILE")
    openssl pkcs12 -export -in "$TLS/broker.pem" -inkey "$TLS/broker.key" -certfile "$TLS/ca.pem" \
        -name broker -out "$TLS/broker.p12" -passout "file:$KEYSTORE_PASSWORD_FILE"
    chmod 600 "$TLS/broker.p12"
}

make_password() {
    [[ -s $PASSWORD_FILE ]] || (umask 077 && openssl rand -hex 16 >"$PASSWORD_FILE")
}

# Keeps the ports of an existing DIR (its data and certificates belong to them).
choose_ports() {
    if [[ ! -f $PORTS_FILE ]]; then
        printf 'SSL_PORT=%s\nSASL_SSL_PORT=%s\nCONTROLLER_PORT=%s\n' \
            "${ABW_SECURE_KAFKA_SSL_PORT:-19392}" "${ABW_SECURE_KAFKA_SASL_SSL_PORT:-19393}" \
            "${ABW_SECURE_KAFKA_CONTROLLER_PORT:-19394}" >"$PORTS_FILE"
    fi
    read_ports
}

read_ports() {
    [[ -f $PORTS_FILE ]] || die "$DIR holds no secure broker (no $PORTS_FILE); run \`up $DIR\` first"
    # shellcheck source=/dev/null
    source "$PORTS_FILE"
}

# ---------------------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------------------

configure() {
    mkdir -p "$RUN/data" "$RUN/logs"
    local keystore_password
    keystore_password=$(<"$KEYSTORE_PASSWORD_FILE")
    (
        umask 077
        cat >"$RUN/server.properties" <<EOF
# Generated by deploy/local/secure_kafka.sh: single-node KRaft broker with TLS and SCRAM.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
log.dirs=$RUN/data

# TLS: the broker's key and certificate (PKCS12), the CA it trusts for client certificates (PEM).
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$keystore_password
ssl.key.password=$keystore_password
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
listener.name.ssl.ssl.client.auth=required

# SASL_SSL: SCRAM-SHA-512 only; the user is created by \`kafka-storage format --add-scram\`.
sasl.enabled.mechanisms=$SCRAM_MECHANISM
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
EOF
    )
    cat >"$RUN/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=1
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
EOF
    # Client settings for the health check (and for people using Kafka's own tools).
    (
        umask 077
        cat >"$DIR/client-sasl-ssl.properties" <<EOF
security.protocol=SASL_SSL
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
sasl.mechanism=$SCRAM_MECHANISM
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SCRAM_USER" password="$(<"$PASSWORD_FILE")";
EOF
    )
}

format_storage() {
    [[ -f $RUN/data/meta.properties ]] && return 0
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN/server.properties" \
        --add-scram "$SCRAM_MECHANISM=[name=$SCRAM_USER,password=$(<"$PASSWORD_FILE")]" \
        >>"$RUN/logs/format.log" 2>&1 || {
        print_tails
        die "formatting the storage failed"
    }
}

start() {
    local port
    for port in "$SSL_PORT" "$SASL_SSL_PORT" "$CONTROLLER_PORT"; do
        ! port_open "$port" || die "port $port is taken by another process (see ABW_SECURE_KAFKA_*_PORT)"
    done
    log "starting on 127.0.0.1: SSL $SSL_PORT, SASL_SSL $SASL_SSL_PORT, controller $CONTROLLER_PORT"
    # setsid + nohup + redirects: detached from the caller's session and terminal.
    nohup setsid "$JAVA_BIN" -Xmx256m -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true -Dlog4j.configuration="file:$RUN/log4j.properties" -Dkafka.logs.dir="$RUN/logs" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$RUN/server.properties" \
        </dev/null >>"$RUN/logs/stdout.log" 2>&1 &
    local launcher=$!
    echo "$launcher" >"$RUN/kafka.pid"
    # Until nohup and setsid have exec'd java, the broker is not yet visible as running.
    while kill -0 "$launcher" 2>/dev/null && ! broker_running; do
        sleep 0.2
    done
}

# Healthy = a SASL_SSL client (TLS verified against the CA, SCRAM login) gets the broker's API versions.
healthy() {
    local out
    port_open "$SSL_PORT" && port_open "$SASL_SSL_PORT" || return 1
    grep -q "Kafka Server started" "$RUN/logs/server.log" 2>/dev/null || return 1
    out=$(timeout 60 "$JAVA_BIN" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$KAFKA_HOME/libs/*" \
        kafka.admin.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$SASL_SSL_PORT" \
        --command-config "$DIR/client-sasl-ssl.properties" </dev/null 2>/dev/null) || return 1
    [[ $out == *"127.0.0.1:$SASL_SSL_PORT "* ]]
}

wait_healthy() {
    local start=$SECONDS
    until healthy; do
        if ! broker_running; then
            print_tails
            die "the broker exited during startup (logs above)"
        fi
        if ((SECONDS - start >= HEALTH_TIMEOUT)); then
            print_tails
            die "not healthy after ${HEALTH_TIMEOUT}s (logs above)"
        fi
        sleep 1
    done
    log "healthy after $((SECONDS - start))s"
}

stop() {
    local pids waited=0
    mapfile -t pids < <(broker_pids)
    if ((${#pids[@]} == 0)); then
        log "not running"
        return 0
    fi
    log "stopping (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    while mapfile -t pids < <(broker_pids) && ((${#pids[@]} > 0)); do
        if ((waited == STOP_TIMEOUT)); then
            log "still running after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "${pids[@]}" 2>/dev/null || true
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "stopped"
}

print_env() {
    read_ports
    printf 'export SECURE_KAFKA_SSL_BOOTSTRAP=127.0.0.1:%s\n' "$SSL_PORT"
    printf 'export SECURE_KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:%s\n' "$SASL_SSL_PORT"
    printf 'export SECURE_KAFKA_CA_FILE=%s\n' "$TLS/ca.pem"
    printf 'export SECURE_KAFKA_CLIENT_CERT=%s\n' "$TLS/client.pem"
    printf 'export SECURE_KAFKA_CLIENT_KEY=%s\n' "$TLS/client.key"
    printf 'export SECURE_KAFKA_SASL_MECHANISM=%s\n' "$SCRAM_MECHANISM"
    printf 'export SECURE_KAFKA_SASL_USERNAME=%s\n' "$SCRAM_USER"
    printf 'export SECURE_KAFKA_SASL_PASSWORD_FILE=%s\n' "$PASSWORD_FILE"
}

cmd_up() {
    command -v setsid >/dev/null 2>&1 || die "'setsid' is required on PATH"
    detect_java
    kafka_home
    choose_ports
    if broker_running; then
        log "already running"
    else
        make_certificates
        make_password
        configure
        format_storage
        start
    fi
    wait_healthy
    print_env
}

main() {
    [[ $# -eq 2 ]] || usage
    set_paths "$2"
    case $1 in
    up) cmd_up ;;
    down) stop ;;
    env) print_env ;;
    *) usage ;;
    esac
}

main "$@"
