"""Kafka transport security against a real broker: TLS with client certificates and SASL_SSL with SCRAM-SHA-512.

A second broker (``deploy/local/secure_kafka.sh``, own ports and data) runs for this module only. The CLI and a
worker subprocess connect to it with settings from the environment, as in production; Elasticsearch is the shared
local node (it has no security, so the API key configured here is sent and ignored: it only has to stay out of the
logs). Each test uses its own topics, consumer group and indices.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaConsumer

from app.settings import Settings
from app.stream.kafka_config import kafka_python_options

from .conftest import Services, _parse_exports
from .test_stream import ABUSEWATCH, Stream, count, free_port, ids_in, replay, wait_until, write_traffic

pytestmark = pytest.mark.integration

SECURE_KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "secure_kafka.sh"
UP_TIMEOUT_S = 300


@dataclass(frozen=True)
class SecureBroker:
    """The endpoints and client credentials ``secure_kafka.sh env`` prints."""

    ssl_bootstrap: str
    sasl_ssl_bootstrap: str
    ca_file: str
    client_cert: str
    client_key: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str


def _script(command: str, directory: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["bash", str(SECURE_KAFKA_SH), command, str(directory)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"secure_kafka.sh {command} failed:\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def secure_broker(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A TLS/SCRAM broker on free ports, started once for the module (after ``services``, which fetches Kafka)."""
    if not list((SECURE_KAFKA_SH.parent / ".cache").glob("kafka-*/libs")):
        pytest.skip("no Kafka jars in deploy/local/.cache: run deploy/local/services.sh up once")
    directory = tmp_path_factory.mktemp("secure-kafka")
    ports = {
        "ABW_SECURE_KAFKA_SSL_PORT": str(free_port()),
        "ABW_SECURE_KAFKA_SASL_SSL_PORT": str(free_port()),
        "ABW_SECURE_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    try:
        exports = _parse_exports(_script("up", directory, {**os.environ, **ports, "CI": "true"}))
        yield SecureBroker(
            ssl_bootstrap=exports["SECURE_KAFKA_SSL_BOOTSTRAP"],
            sasl_ssl_bootstrap=exports["SECURE_KAFKA_SASL_SSL_BOOTSTRAP"],
            ca_file=exports["SECURE_KAFKA_CA_FILE"],
            client_cert=exports["SECURE_KAFKA_CLIENT_CERT"],
            client_key=exports["SECURE_KAFKA_CLIENT_KEY"],
            sasl_mechanism=exports["SECURE_KAFKA_SASL_MECHANISM"],
            sasl_username=exports["SECURE_KAFKA_SASL_USERNAME"],
            sasl_password=Path(exports["SECURE_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
        )
    finally:
        _script("down", directory)


API_KEY = f"abw-it-api-key-{uuid.uuid4().hex}"


def secure_env(
    broker: SecureBroker, protocol: str, tmp_path: Path, es_url: str, **overrides: str
) -> tuple[dict[str, str], int]:
    """Environment of one isolated deployment on the secure broker (``overrides``: setting name -> value)."""
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    bootstrap = broker.ssl_bootstrap if protocol == "SSL" else broker.sasl_ssl_bootstrap
    settings = {
        "kafka__bootstrap": bootstrap,
        "kafka__security_protocol": protocol,
        "kafka__ssl_cafile": broker.ca_file,
        "kafka__raw_topic": f"sec-{suffix}-raw",
        "kafka__internal_topic": f"sec-{suffix}-by-identity",
        "kafka__events_topic": f"sec-{suffix}-events",
        "kafka__alerts_topic": f"sec-{suffix}-alerts",
        "kafka__dead_letter_topic": f"sec-{suffix}-dead-letter",
        "kafka__state_topic": f"sec-{suffix}-state",
        "kafka__consumer_group": f"sec-{suffix}",
        "kafka__partitions": "2",
        "elasticsearch__api_key": API_KEY,
        "elasticsearch__events_index": f"logs-abwsec.events-{suffix}",
        "elasticsearch__alerts_index": f"logs-abwsec.alerts-{suffix}",
        "elasticsearch__shadow_alerts_index": f"logs-abwsec.shadow_alerts-{suffix}",
        "elasticsearch__dead_letter_index": f"logs-abwsec.dead_letter-{suffix}",
        "elasticsearch__request_timeout_s": "10",
        "detection__batch_timeout_s": "0.2",
        "worker__web_port": str(port),
        "worker__health_check_interval_s": "1",
        "worker__data_dir": str(tmp_path / "faust"),
    }
    if protocol == "SSL":
        settings |= {"kafka__ssl_certfile": broker.client_cert, "kafka__ssl_keyfile": broker.client_key}
    else:
        settings |= {
            "kafka__sasl_mechanism": broker.sasl_mechanism,
            "kafka__sasl_username": broker.sasl_username,
            "kafka__sasl_password": broker.sasl_password,
        }
    settings |= overrides
    env = {key: value for key, value in os.environ.items() if key != "ABW_CONFIG"} | {"ABW_ES_URL": es_url}
    env |= {f"ABW_{name.upper()}": value for name, value in settings.items()}
    return env, port


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Exit code and output (stdout + stderr, whitespace collapsed: rich wraps long lines) of ``abusewatch``."""
    result = subprocess.run([ABUSEWATCH, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a process started with ``env`` loads."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("ABW_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("ABW_"):
                patch.setenv(name, value)
        return Settings()


def assert_no_secret(text: str, broker: SecureBroker) -> None:
    assert broker.sasl_password not in text, "the SASL password was logged"
    assert API_KEY not in text, "the Elasticsearch API key was logged"


def read_back(env: dict[str, str], topic: str, expected: int) -> list[bytes]:
    """Records of ``topic`` read by a kafka-python consumer with the deployment's own security settings."""
    consumer = KafkaConsumer(
        topic,
        **kafka_python_options(settings_from(env).kafka),
        group_id=f"sec-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    values: list[bytes] = []
    try:
        for record in consumer:
            values.append(record.value)
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


@contextlib.contextmanager
def cleanup_indices(es_url: str, env: dict[str, str]) -> Iterator[None]:
    """Removes the deployment's indices and index templates from the shared Elasticsearch afterwards."""
    try:
        yield
    finally:
        names = [value for name, value in env.items() if name.startswith("ABW_ELASTICSEARCH__") and "_INDEX" in name]
        with Elasticsearch(es_url, request_timeout=30) as es:
            for name in names:
                with contextlib.suppress(Exception):
                    es.indices.delete(index=name, ignore_unavailable=True)
                with contextlib.suppress(Exception):
                    es.indices.delete_index_template(name=f"abusewatch-{name}")


# -- tests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_bootstrap_produce_and_check_config_through_the_secure_listener(
    protocol: str, secure_broker: SecureBroker, es_url: str, tmp_path: Path
) -> None:
    """SSL (mutual TLS) and SASL_SSL (SCRAM-SHA-512): topics created, records produced and read back, config OK."""
    env, _ = secure_env(secure_broker, protocol, tmp_path, es_url)
    traffic = write_traffic(tmp_path / "traffic.jsonl", 25, seed=51)
    with cleanup_indices(es_url, env):
        outputs = []
        for args, words in (
            (("bootstrap",), f"topic {env['ABW_KAFKA__RAW_TOPIC']}: created"),
            (("produce", str(traffic)), "produced 25 records in 25 messages"),
            (("check-config",), "configuration OK"),
        ):
            code, output = run_cli(env, *args)
            assert code == 0 and words in output, output
            assert "0 failed" in output or args[0] != "produce", output
            outputs.append(output)
    assert sorted(read_back(env, env["ABW_KAFKA__RAW_TOPIC"], 25)) == sorted(traffic.read_bytes().splitlines())
    assert_no_secret(" ".join(outputs), secure_broker)


def test_worker_over_sasl_ssl_writes_every_event_to_elasticsearch(
    secure_broker: SecureBroker, es_url: str, es_client: Elasticsearch, tmp_path: Path
) -> None:
    """A worker subprocess consumes and produces through SASL_SSL; exactly the events replay writes land in ES."""
    env, port = secure_env(secure_broker, "SASL_SSL", tmp_path, es_url)
    stream = Stream(env=env, tmp_path=tmp_path, web_port=port)
    traffic = write_traffic(tmp_path / "traffic.jsonl", 60, seed=52, malformed=True)
    with cleanup_indices(es_url, env):
        expected = replay(stream, [traffic])
        event_ids = sorted(doc["event"]["hash"] for doc in expected["events"])  # an enriched event's _id
        stream.cli("bootstrap")
        with stream.worker() as worker:
            stream.cli("produce", str(traffic))
            wait_until(lambda: count(es_client, stream.events_index) >= len(event_ids), "the events in ES")
            wait_until(lambda: count(es_client, stream.dead_letter_index) >= len(expected["dead"]), "dead letters")
            assert sorted(ids_in(es_client, stream.events_index)) == event_ids
            assert count(es_client, stream.dead_letter_index) == len(expected["dead"])
            status, health = stream.health()
            assert status == 200 and health["consuming"], health
            assert worker.poll() is None
        log = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("worker-*.log"))
    assert f"worker {env['ABW_KAFKA__CONSUMER_GROUP']}:" in log, "not the worker's log"
    assert_no_secret(log, secure_broker)


def _rogue_ca(directory: Path) -> str:
    """A CA that did not sign the broker's certificate."""
    key, cert = directory / "rogue.key", directory / "rogue.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=rogue test CA"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    return str(cert)


@pytest.mark.parametrize(
    ("case", "key_words"),
    [
        ("wrong_password", ("rejected the SASL SCRAM-SHA-512 login", "authentication failed", "sasl_password")),
        ("unknown_ca", ("certificate verification failed", "not trusted", "kafka.ssl_cafile")),
        ("plaintext_client_on_tls_port", ("expects TLS", "security_protocol is PLAINTEXT", "SSL or SASL_SSL")),
        ("no_client_certificate", ("refused our TLS client certificate", "kafka.ssl_certfile")),
    ],
)
def test_check_config_explains_a_transport_failure_in_plain_words(
    case: str, key_words: tuple[str, ...], secure_broker: SecureBroker, es_url: str, tmp_path: Path
) -> None:
    wrong_password = f"not-the-password-{uuid.uuid4().hex[:6]}"
    base, overrides = {
        "wrong_password": ("SASL_SSL", {"kafka__sasl_password": wrong_password}),
        "unknown_ca": ("SASL_SSL", {"kafka__ssl_cafile": _rogue_ca(tmp_path)}),
        "plaintext_client_on_tls_port": ("SASL_SSL", {"kafka__security_protocol": "PLAINTEXT"}),
        "no_client_certificate": ("SSL", {}),
    }[case]
    env, _ = secure_env(secure_broker, base, tmp_path, es_url, **overrides)
    if case == "no_client_certificate":
        del env["ABW_KAFKA__SSL_CERTFILE"], env["ABW_KAFKA__SSL_KEYFILE"]
    code, output = run_cli(env, "check-config")
    assert code == 1, output
    for words in key_words:
        assert words in output, f"{words!r} missing from: {output}"
    assert "Traceback" not in output
    assert_no_secret(output, secure_broker)
    assert wrong_password not in output


def test_produce_names_the_cause_when_the_login_fails(secure_broker: SecureBroker, es_url: str, tmp_path: Path) -> None:
    """Not only check-config: a command that fails to connect says why too, without echoing the password."""
    wrong_password = f"not-the-password-{uuid.uuid4().hex[:6]}"
    env, _ = secure_env(secure_broker, "SASL_SSL", tmp_path, es_url, kafka__sasl_password=wrong_password)
    traffic = write_traffic(tmp_path / "traffic.jsonl", 3, seed=53)
    code, output = run_cli(env, "produce", str(traffic))
    assert code == 1, output
    assert "rejected the SASL SCRAM-SHA-512 login" in output and "sasl_password" in output
    assert wrong_password not in output and "Traceback" not in output
