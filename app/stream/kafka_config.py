"""Kafka connection options from settings (kafka-python for admin, produce, check-config; Faust for the worker),
and a diagnosis in plain words of a connection that fails.

TLS and SASL come only from settings; passwords are read from ``SecretStr`` at the last moment and never logged.
kafka-python reports every TLS or login failure as "Unable to bootstrap" after its timeout, so :func:`diagnose`
connects once more with aiokafka (the worker's client), which raises the real cause, and names the setting to fix.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

from app.settings import KafkaSettings

_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
# TLS alerts a broker sends when it does not accept the client certificate (or got none).
_CLIENT_CERTIFICATE_ALERTS = ("ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA")


def kafka_python_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``, ``KafkaProducer``)."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in _TLS_PROTOCOLS:
        options.update(
            ssl_cafile=_path(kafka.ssl_cafile),
            ssl_certfile=_path(kafka.ssl_certfile),
            ssl_keyfile=_path(kafka.ssl_keyfile),
            ssl_check_hostname=True,
        )
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        )
    return options


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A verifying TLS context: the configured CA (else the system's) and an optional client certificate."""
    context = ssl.create_default_context(cafile=_path(kafka.ssl_cafile))
    if kafka.ssl_certfile:
        context.load_cert_chain(str(kafka.ssl_certfile), _path(kafka.ssl_keyfile))
    return context


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Faust's ``broker_credentials`` for the configured security protocol (None for PLAINTEXT)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context(kafka))
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=ssl_context(kafka) if kafka.security_protocol == "SASL_SSL" else None,
    )


def diagnose(kafka: KafkaSettings, timeout_s: float = 10.0) -> str | None:
    """Why the first bootstrap broker refuses this client, in plain words naming the setting to fix; None if the
    connection (TCP, TLS, SASL login, API versions) succeeds or fails in a way not recognised here."""
    try:
        host, port = first_broker(kafka.bootstrap)
    except ValueError:
        return f"kafka.bootstrap is {kafka.bootstrap!r}, which is not a list of host:port"
    where = f"Kafka at {host}:{port} ({kafka.security_protocol})"
    try:
        context = ssl_context(kafka) if kafka.security_protocol in _TLS_PROTOCOLS else None
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        return f"{where}: cannot load the TLS files ({error}); check kafka.ssl_cafile, ssl_certfile and ssl_keyfile"
    try:
        asyncio.run(asyncio.wait_for(_connect(kafka, host, port, context), timeout_s))
    except Exception as error:  # every failure is explained or left to the caller, never raised
        return explain(error, kafka, where, lambda: speaks_tls(host, port))
    return None


def explain(error: BaseException, kafka: KafkaSettings, where: str, tls_listener: Callable[[], bool]) -> str | None:
    """Plain words for a failed connection attempt; ``tls_listener()`` says whether the port answers in TLS (asked
    only when nothing more specific explains the failure, to spot a security protocol that does not match)."""
    causes = _chain(error)
    text = "; ".join(dict.fromkeys(str(cause) for cause in causes if str(cause)))
    if _has(causes, SaslAuthenticationFailed):
        return (
            f"{where}: the broker rejected the SASL {kafka.sasl_mechanism or 'PLAIN'} login of user "
            f"{kafka.sasl_username!r} (authentication failed: {text}); check kafka.sasl_username and sasl_password"
        )
    if _has(causes, UnsupportedSaslMechanismError):
        return (
            f"{where}: the broker does not enable SASL mechanism {kafka.sasl_mechanism or 'PLAIN'} on this "
            "listener; set kafka.sasl_mechanism to one it enables (e.g. SCRAM-SHA-512)"
        )
    verification = next((cause for cause in causes if isinstance(cause, ssl.SSLCertVerificationError)), None)
    if verification is not None:
        detail = verification.verify_message or str(verification)
        if "mismatch" in detail.lower():
            return (
                f"{where}: the broker's TLS certificate is not issued for this host ({detail}); connect by a name "
                "or address the certificate lists"
            )
        return (
            f"{where}: TLS certificate verification failed, the broker's certificate is not trusted ({detail}); "
            "kafka.ssl_cafile must name the CA that signed the broker's certificate"
        )
    if any(alert in text.upper() for alert in _CLIENT_CERTIFICATE_ALERTS):
        return (
            f"{where}: the broker refused our TLS client certificate ({text}); this listener requires mutual TLS: "
            "set kafka.ssl_certfile and kafka.ssl_keyfile to a certificate signed by a CA the broker trusts"
        )
    if _has(causes, ConnectionRefusedError):
        return f"{where}: nothing listens there (connection refused); is the broker running, are host and port right?"
    if _has(causes, socket.gaierror):
        return f"{where}: the host name does not resolve ({text}); check kafka.bootstrap"
    uses_tls = kafka.security_protocol in _TLS_PROTOCOLS
    if uses_tls and not tls_listener():
        return (
            f"{where}: this listener does not speak TLS, but kafka.security_protocol is {kafka.security_protocol}; "
            "use the broker's TLS listener, or PLAINTEXT / SASL_PLAINTEXT if this one is meant to be unencrypted"
        )
    if not uses_tls and tls_listener():
        return (
            f"{where}: this listener expects TLS, but kafka.security_protocol is {kafka.security_protocol} "
            "(unencrypted); set kafka.security_protocol to SSL or SASL_SSL and kafka.ssl_cafile to the broker's CA"
        )
    if _has(causes, TimeoutError):
        return f"{where}: no answer within the timeout; is a firewall in the way, is the port right?"
    return None


def speaks_tls(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True if ``host:port`` answers a TLS handshake (certificate not checked): a TLS listener, not a plaintext one.

    A TLS alert from the server (e.g. "client certificate required") counts as TLS too.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, context.wrap_socket(sock):
            return True
    except ssl.SSLError as error:
        return "ALERT" in str(error).upper()
    except OSError:
        return False


def first_broker(bootstrap: str) -> tuple[str, int]:
    """(host, port) of the first entry of a ``host:port,host:port`` bootstrap list (port 9092 if absent)."""
    first = bootstrap.split(",", maxsplit=1)[0].strip()
    host, _, port = first.rpartition(":") if ":" in first else (first, ":", "9092")
    return host.strip("[]"), int(port)


async def _connect(kafka: KafkaSettings, host: str, port: int, context: ssl.SSLContext | None) -> None:
    connection = await create_conn(
        host,
        port,
        client_id="abusewatch-check",
        request_timeout_ms=10_000,
        ssl_context=context,
        security_protocol=kafka.security_protocol,
        sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
        sasl_plain_username=kafka.sasl_username,
        sasl_plain_password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
    )
    connection.close()


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes/contexts (aiokafka wraps the TLS error that closed a connection)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _has(causes: list[BaseException], kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(cause, kind) for cause in causes)


def _path(value: Any) -> str | None:
    return str(value) if value else None
