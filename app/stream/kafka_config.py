"""Kafka connection options from settings, for kafka-python (admin, produce, check-config) and for Faust.

TLS and SASL come only from settings; passwords are read from ``SecretStr`` at the last moment and never logged.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from app.settings import KafkaSettings


def kafka_python_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``, ``KafkaProducer``)."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
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


def _path(value: Any) -> str | None:
    return str(value) if value else None
