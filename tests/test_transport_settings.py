"""Transport security from settings, without a broker: Elasticsearch client options (TLS, API key), Kafka TLS and
SASL options for every client the project uses, and the plain-words diagnosis of a failing Kafka connection.

The Kafka side runs against a real TLS broker in tests/integration/test_transport_security.py; the local
Elasticsearch has no security, so its TLS and API-key configuration is proven here, on the configured client.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from elasticsearch import Elasticsearch
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from app.commands.stream import check_kafka
from app.settings import ElasticsearchSettings, KafkaSettings, Settings
from app.sinks.elasticsearch import client_options
from app.stream.kafka_config import (
    diagnose,
    explain,
    faust_credentials,
    first_broker,
    kafka_python_options,
    speaks_tls,
    ssl_context,
)

WHERE = "Kafka at broker:9093 (SASL_SSL)"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    return {"cert": cert, "key": key}


# -- Elasticsearch ----------------------------------------------------------------------------------------------


def test_elasticsearch_tls_and_api_key_reach_the_client(tls_files: dict[str, Path]) -> None:
    es = ElasticsearchSettings(url="https://es.example:9200", ca_certs=tls_files["cert"], api_key=SecretStr("k3y"))
    options = client_options(es)
    assert options["ca_certs"] == str(tls_files["cert"]) and options["verify_certs"] is True
    assert options["api_key"] == "k3y" and "basic_auth" not in options
    with Elasticsearch(**options) as client:
        node = client.transport.node_pool.get()
        assert (node.config.scheme, node.config.ca_certs, node.config.verify_certs) == (
            "https",
            str(tls_files["cert"]),
            True,
        )
        assert client._headers["authorization"] == "ApiKey k3y"
        assert "k3y" not in repr(client._headers)


def test_elasticsearch_api_key_wins_over_basic_auth_and_basic_auth_is_used_alone() -> None:
    both = ElasticsearchSettings(api_key=SecretStr("k"), username="u", password=SecretStr("p"))
    assert "basic_auth" not in client_options(both) and client_options(both)["api_key"] == "k"
    basic = client_options(ElasticsearchSettings(username="u", password=SecretStr("p")))
    assert basic["basic_auth"] == ("u", "p") and "api_key" not in basic


def test_elasticsearch_verification_can_only_be_turned_off_explicitly() -> None:
    assert client_options(ElasticsearchSettings(url="https://es.example:9200"))["verify_certs"] is True
    options = client_options(ElasticsearchSettings(url="https://es.example:9200", verify_certs=False))
    with pytest.warns(Warning, match="verify_certs=False is insecure"), Elasticsearch(**options) as client:
        assert client.transport.node_pool.get().config.verify_certs is False


# -- Kafka options ----------------------------------------------------------------------------------------------


def sasl_ssl(tls_files: dict[str, Path], **extra: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="abusewatch",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=tls_files["cert"],
        **extra,
    )


def test_kafka_python_gets_tls_and_scram_for_sasl_ssl(tls_files: dict[str, Path]) -> None:
    options = kafka_python_options(sasl_ssl(tls_files))
    assert options == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(tls_files["cert"]),
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "abusewatch",
        "sasl_plain_password": "s3cret",
    }


@pytest.fixture
def mutual_tls(tls_files: dict[str, Path]) -> KafkaSettings:
    """SSL with a client certificate (the broker's self-signed certificate doubles as the CA)."""
    return KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=tls_files["cert"],
        ssl_certfile=tls_files["cert"],
        ssl_keyfile=tls_files["key"],
    )


def test_kafka_python_gets_a_client_certificate_for_mutual_tls(
    mutual_tls: KafkaSettings, tls_files: dict[str, Path]
) -> None:
    options = kafka_python_options(mutual_tls)
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == (str(tls_files["cert"]), str(tls_files["key"]))
    assert "sasl_mechanism" not in options


def test_the_worker_verifies_the_broker_and_presents_the_client_certificate(mutual_tls: KafkaSettings) -> None:
    settings = mutual_tls
    context = ssl_context(settings)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "localhost"),),)]
    auth = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert auth == {"security_protocol": "SSL", "ssl_context": auth["ssl_context"]}
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_the_worker_logs_in_with_scram_over_tls(tls_files: dict[str, Path]) -> None:
    credentials = faust_credentials(sasl_ssl(tls_files))
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "abusewatch",
    )
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "s3cret" not in repr(credentials) and "s3cret" not in str(Settings(kafka=sasl_ssl(tls_files)))


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [("a:1,b:2", ("a", 1)), (" kafka.example:9093 ", ("kafka.example", 9093)), ("kafka", ("kafka", 9092)),
     ("[::1]:9093", ("::1", 9093))],
)  # fmt: skip
def test_first_broker_of_the_bootstrap_list(bootstrap: str, expected: tuple[str, int]) -> None:
    assert first_broker(bootstrap) == expected


# -- diagnosis --------------------------------------------------------------------------------------------------


def never_asked() -> bool:
    raise AssertionError("the TLS probe should not be needed for this failure")


def test_a_rejected_login_names_the_user_and_the_password_setting(tls_files: dict[str, Path]) -> None:
    error = SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")
    text = explain(error, sasl_ssl(tls_files), WHERE, never_asked)
    assert text is not None and text.startswith(WHERE)
    assert "rejected the SASL SCRAM-SHA-512 login of user 'abusewatch'" in text and "sasl_password" in text
    assert "s3cret" not in text


def test_an_unsupported_mechanism_points_at_sasl_mechanism(tls_files: dict[str, Path]) -> None:
    text = explain(UnsupportedSaslMechanismError(), sasl_ssl(tls_files), WHERE, never_asked)
    assert text is not None and "does not enable SASL mechanism SCRAM-SHA-512" in text


def _verification_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_message = message
    return error


def test_an_untrusted_certificate_points_at_the_ca_file(tls_files: dict[str, Path]) -> None:
    text = explain(
        _verification_error("self-signed certificate in certificate chain"), sasl_ssl(tls_files), WHERE, never_asked
    )
    assert text is not None and "certificate verification failed" in text and "not trusted" in text
    assert "self-signed certificate in certificate chain" in text and "kafka.ssl_cafile" in text


def test_a_certificate_for_another_host_says_so(tls_files: dict[str, Path]) -> None:
    error = _verification_error("IP address mismatch, certificate is not valid for '10.0.0.1'.")
    text = explain(error, sasl_ssl(tls_files), WHERE, never_asked)
    assert text is not None and "not issued for this host" in text


def test_a_refused_client_certificate_points_at_certfile_and_keyfile(tls_files: dict[str, Path]) -> None:
    error = KafkaConnectionError("Connection at broker:9093 closed")
    error.__cause__ = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    text = explain(error, KafkaSettings(security_protocol="SSL"), WHERE, never_asked)
    assert text is not None and "refused our TLS client certificate" in text and "kafka.ssl_certfile" in text


def test_refused_and_unresolvable_endpoints(tls_files: dict[str, Path]) -> None:
    refused = explain(ConnectionRefusedError(111, "Connect call failed"), KafkaSettings(), WHERE, never_asked)
    assert refused is not None and "nothing listens there" in refused
    unknown = explain(socket.gaierror(-2, "Name or service not known"), KafkaSettings(), WHERE, never_asked)
    assert unknown is not None and "does not resolve" in unknown and "kafka.bootstrap" in unknown


def test_a_security_protocol_that_does_not_match_the_listener(tls_files: dict[str, Path]) -> None:
    closed = KafkaConnectionError("Connection at broker:9093 closed")
    plaintext_on_tls = explain(closed, KafkaSettings(), WHERE, lambda: True)
    assert plaintext_on_tls is not None and "expects TLS" in plaintext_on_tls and "SSL or SASL_SSL" in plaintext_on_tls
    tls_on_plaintext = explain(ConnectionResetError(), sasl_ssl(tls_files), WHERE, lambda: False)
    assert tls_on_plaintext is not None and "does not speak TLS" in tls_on_plaintext
    assert explain(closed, KafkaSettings(), WHERE, lambda: False) is None  # nothing recognised: the caller says more
    timed_out = explain(TimeoutError(), KafkaSettings(), WHERE, lambda: False)
    assert timed_out is not None and "no answer" in timed_out


@pytest.fixture
def tls_server(tls_files: dict[str, Path]) -> Iterator[int]:
    """A local TLS server (it completes handshakes, then hangs up): the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    with LocalServer(lambda connection: context.wrap_socket(connection, server_side=True).close()) as port:
        yield port


@pytest.fixture
def plain_server() -> Iterator[int]:
    """A local plaintext server that reads a little and hangs up: the port."""
    with LocalServer(lambda connection: (connection.recv(64), connection.close())) as port:
        yield port


class LocalServer:
    """Accepts connections on a free local port in a thread and hands each to ``handle``."""

    def __init__(self, handle: object) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return self.listener.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(2)
            try:
                self.handle(connection)  # type: ignore[operator]
            except (OSError, ssl.SSLError):
                connection.close()


def test_speaks_tls_tells_a_tls_listener_from_a_plaintext_one(tls_server: int, plain_server: int) -> None:
    assert speaks_tls("127.0.0.1", tls_server)
    assert not speaks_tls("127.0.0.1", plain_server)
    with socket.create_server(("127.0.0.1", 0)) as unused:
        closed_port = unused.getsockname()[1]
    assert not speaks_tls("127.0.0.1", closed_port)


def test_diagnose_finds_a_plaintext_client_on_a_tls_port(tls_server: int) -> None:
    text = diagnose(KafkaSettings(bootstrap=f"127.0.0.1:{tls_server}"), timeout_s=5)
    assert text is not None and "expects TLS, but kafka.security_protocol is PLAINTEXT" in text


def test_diagnose_finds_a_tls_client_on_a_plaintext_port(plain_server: int, tls_files: dict[str, Path]) -> None:
    settings = KafkaSettings(
        bootstrap=f"127.0.0.1:{plain_server}", security_protocol="SSL", ssl_cafile=tls_files["cert"]
    )
    text = diagnose(settings, timeout_s=5)
    assert text is not None and "does not speak TLS, but kafka.security_protocol is SSL" in text


def test_diagnose_reports_a_bootstrap_that_is_not_host_and_port() -> None:
    assert diagnose(KafkaSettings(bootstrap="kafka:ninety")) == (
        "kafka.bootstrap is 'kafka:ninety', which is not a list of host:port"
    )


def test_diagnose_reports_unloadable_tls_files(tmp_path: Path) -> None:
    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate")
    text = diagnose(KafkaSettings(security_protocol="SSL", ssl_cafile=broken), timeout_s=5)
    assert text is not None and "cannot load the TLS files" in text


def test_check_config_reports_a_closed_port_without_waiting_for_kafka_python() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        closed_port = unused.getsockname()[1]
    problems = check_kafka(Settings(kafka=KafkaSettings(bootstrap=f"127.0.0.1:{closed_port}")))
    assert len(problems) == 1 and "nothing listens there (connection refused)" in problems[0]
