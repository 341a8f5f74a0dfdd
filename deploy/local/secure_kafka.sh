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
# (run `services.sh up` once first) with the helpers it shares with services.sh
# (deploy/local/lib/). Everything it creates lives in DIR:
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
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/kafka.sh
source "$HERE/lib/kafka.sh"

SCRAM_USER=abusewatch
SCRAM_MECHANISM=SCRAM-SHA-512
CERT_DAYS=30

kafka_locate "$HERE/pom.xml" "$HERE/.cache"

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

# ---------------------------------------------------------------------------------------
# The one service, `broker` (hooks of lib/common.sh)
# ---------------------------------------------------------------------------------------

service_run_dir() { printf '%s' "$RUN"; }

# Healthy = a SASL_SSL client (TLS verified against the CA, SCRAM login) gets the broker's API versions.
service_healthy() {
    port_open "$SSL_PORT" || return 1
    grep -q "Kafka Server started" "$RUN/logs/server.log" 2>/dev/null || return 1
    kafka_answers "127.0.0.1:$SASL_SSL_PORT" --command-config "$DIR/client-sasl-ssl.properties"
}

service_logs() { printf '%s\n' "$RUN/logs/server.log" "$RUN/logs/stdout.log" "$RUN/logs/format.log"; }

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
    require_commands openssl
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
    local keystore_password
    keystore_password=$(<"$KEYSTORE_PASSWORD_FILE")
    kafka_configure "$RUN" "$CONTROLLER_PORT" SSL="$SSL_PORT" SASL_SSL="$SASL_SSL_PORT" <<EOF
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

# Topics are created explicitly (abusewatch bootstrap).
auto.create.topics.enable=false
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

# Checks the ports, formats the storage (with the SCRAM user) the first time, starts the broker.
start() {
    require_free_port "$SSL_PORT" ABW_SECURE_KAFKA_SSL_PORT
    require_free_port "$SASL_SSL_PORT" ABW_SECURE_KAFKA_SASL_SSL_PORT
    require_free_port "$CONTROLLER_PORT" ABW_SECURE_KAFKA_CONTROLLER_PORT
    kafka_format "$RUN" --add-scram "$SCRAM_MECHANISM=[name=$SCRAM_USER,password=$(<"$PASSWORD_FILE")]"
    log "starting on 127.0.0.1: SSL $SSL_PORT, SASL_SSL $SASL_SSL_PORT, controller $CONTROLLER_PORT"
    kafka_launch "$RUN" -Xmx256m -Xms128m -XX:TieredStopAtLevel=1
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
    require_commands setsid
    detect_java
    [[ -d $KAFKA_HOME/libs ]] || die "$KAFKA_HOME is missing: run deploy/local/services.sh up once to fetch Kafka"
    choose_ports
    if service_running broker; then
        log "broker: already running"
    else
        make_certificates
        make_password
        configure
        start
    fi
    wait_healthy broker
    print_env
}

main() {
    [[ $# -eq 2 ]] || usage
    set_paths "$2"
    case $1 in
    up) cmd_up ;;
    down) stop_service broker ;;
    env) print_env ;;
    *) usage ;;
    esac
}

main "$@"
