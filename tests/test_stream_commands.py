"""Plain-words diagnostics of ``abusewatch check-config`` and the Kafka client options (no services needed)."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, TlsError
from elastic_transport import ConnectionError as ESConnectionError
from elasticsearch import AuthenticationException
from kafka.errors import KafkaTimeoutError
from typer.testing import CliRunner

from app.cli import cli
from app.commands.stream import (
    es_problem,
    exception_problems,
    kafka_problem,
    missing_files,
    redaction_key_problem,
)
from app.settings import DetectionSettings, ElasticsearchSettings, KafkaSettings, Settings
from app.stream.kafka_config import faust_credentials, kafka_python_options

STRONG_KEY = "q7Zr2xW9mT4vL8nK3pB6sD1f"


def settings(**kafka: object) -> Settings:
    return Settings(kafka=KafkaSettings(**kafka), elasticsearch=ElasticsearchSettings(url="https://es.example:9200"))


def test_unreachable_kafka_names_the_endpoint_and_protocol() -> None:
    text = kafka_problem(KafkaTimeoutError("Unable to bootstrap"), settings(bootstrap="kafka.example:9093"))
    assert "cannot reach Kafka at kafka.example:9093 (PLAINTEXT)" in text


def test_kafka_tls_and_auth_failures_point_at_the_right_settings() -> None:
    tls = kafka_problem(ssl.SSLCertVerificationError("certificate verify failed"), settings())
    assert "TLS failed" in tls and "kafka.ssl_cafile" in tls
    auth = kafka_problem(Exception("SaslAuthenticationFailedError: bad credentials"), settings())
    assert "authentication failed" in auth and "sasl_password" in auth


def test_elasticsearch_failures_in_plain_words() -> None:
    meta = ApiResponseMeta(401, "1.1", HttpHeaders(), 0.0, NodeConfig("https", "es.example", 9200))
    assert "credentials rejected" in es_problem(AuthenticationException("no", meta, {}), settings())
    assert "TLS failed" in es_problem(TlsError("certificate verify failed"), settings())
    assert "cannot reach Elasticsearch at https://es.example:9200" in es_problem(ESConnectionError("x"), settings())


def test_unreadable_tls_files_are_reported_by_setting_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    problems = missing_files(settings(ssl_cafile=ca, ssl_certfile=tmp_path / "absent.pem"))
    assert problems == [f"kafka.ssl_certfile is {tmp_path / 'absent.pem'}, which is not a readable file"]


def test_a_bad_exceptions_file_is_reported_before_kafka_is_contacted(tmp_path: Path) -> None:
    path = tmp_path / "exceptions.yml"
    path.write_text("- id: no-reason\n  rules: [abw-x]\n  match: {user.id: [alice]}\n  expires: 2030-01-01\n")
    configured = Settings(detection=DetectionSettings(exceptions_path=path), kafka=KafkaSettings(bootstrap="nowhere:1"))
    problems = exception_problems(configured)
    assert len(problems) == 1 and "no-reason" in problems[0] and "reason" in problems[0]
    assert exception_problems(settings()) == []


@pytest.mark.parametrize("command", ["worker", "check-config"])
def test_markup_in_a_bad_exceptions_file_is_printed_as_text(tmp_path: Path, command: str) -> None:
    path = tmp_path / "m[" / "x]" / "exceptions.yml"  # a path and a value that read as Rich closing tags
    path.parent.mkdir(parents=True)
    path.write_text(
        "- id: x1\n  rules: [r]\n  match: {source.ip: ['[/bold] 10.0.0.300']}\n  reason: r\n  expires: 2030-01-01\n"
    )
    env = {"ABW_CONFIG": "", "ABW_DETECTION__EXCEPTIONS_PATH": str(path), "ABW_KAFKA__BOOTSTRAP": "nowhere:1"}
    result = CliRunner().invoke(cli, [command], env=env | {"ABW_DETECTION__REDACTION_KEY": STRONG_KEY})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{path}: entry 1 (id 'x1'): match: 'source.ip': bad IP address: '[/bold] 10.0.0.300'" in result.stderr


def test_secrets_never_appear_in_the_printed_settings() -> None:
    secret = Settings(kafka=KafkaSettings(sasl_password="hunter2"), elasticsearch=ElasticsearchSettings(api_key="k3y"))
    printed = json.dumps(secret.model_dump(mode="json"))
    assert "hunter2" not in printed and "k3y" not in printed


def test_kafka_options_follow_the_security_protocol() -> None:
    plain = kafka_python_options(KafkaSettings())
    assert plain == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    sasl = kafka_python_options(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p"
        )
    )
    assert (sasl["sasl_mechanism"], sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert faust_credentials(KafkaSettings()) is None
    credentials = faust_credentials(
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    )
    assert credentials is not None and "p" not in repr(credentials)


def test_shorthand_endpoint_variables_and_nested_ones_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABW_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("ABW_ES_URL", "http://elasticsearch:9200")
    loaded = Settings()
    assert (loaded.kafka.bootstrap, loaded.elasticsearch.url) == ("kafka:9092", "http://elasticsearch:9200")
    monkeypatch.setenv("ABW_KAFKA__BOOTSTRAP", "other:9092")
    assert Settings().kafka.bootstrap == "other:9092"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "built-in development key"),
        ("CHANGE-ME-32-random-bytes", "placeholder"),
        ("short-key", "shorter than 16 bytes"),
    ],
)
def test_the_worker_refuses_a_weak_redaction_key_before_contacting_kafka(key: str | None, reason: str) -> None:
    env = {"ABW_CONFIG": "", "ABW_KAFKA__BOOTSTRAP": "nowhere:1", "ABW_DETECTION__REDACTION_KEY": key}
    result = CliRunner().invoke(cli, ["worker"], env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "detection.redaction_key is weak" in result.stderr and reason in result.stderr
    assert "Kafka" not in result.stderr.split("weak")[0]  # said first, without waiting for a broker
    if key is not None:
        assert key not in result.stderr  # the key itself is never printed


def test_a_strong_key_or_an_explicit_allowance_passes_the_key_check() -> None:
    assert redaction_key_problem(Settings(detection=DetectionSettings(redaction_key=STRONG_KEY))) is None
    allowed = DetectionSettings(allow_weak_redaction_key=True)
    assert redaction_key_problem(Settings(detection=allowed)) is None
    default = Settings(detection=DetectionSettings())  # not Settings(): the environment may hold a key
    assert "ABW_DETECTION__REDACTION_KEY" in (redaction_key_problem(default) or "")


@pytest.mark.parametrize("command", [["bootstrap"], ["produce"]])
def test_an_unreachable_broker_is_reported_before_a_kafka_client_is_made(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python retries an unreachable broker for about 30 s, logging an error each time; the commands ask once
    (``diagnose``) and stop with the cause."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    clients: list[object] = []

    def no_client(*args: object, **_kwargs: object) -> None:
        clients.append(args)
        raise ConnectionError("no broker")

    monkeypatch.setattr("app.commands.stream.KafkaProducer", no_client)
    monkeypatch.setattr("app.commands.stream.ensure_topics", no_client)
    if command == ["produce"]:
        command = ["produce", str(Path(__file__).parents[1] / "app" / "samples" / "openai.jsonl")]
    result = CliRunner().invoke(cli, command, env={"ABW_CONFIG": "", "ABW_KAFKA__BOOTSTRAP": f"127.0.0.1:{port}"})
    assert result.exit_code == 1, result.output
    assert f"Kafka at 127.0.0.1:{port}" in result.stderr and "nothing listens there" in result.stderr
    assert clients == [], "a Kafka client was made for an unreachable broker"


def test_bootstrap_without_the_templates_says_which_setting_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel has no deploy/elasticsearch: bootstrap stops before creating anything, naming the setting
    (it once failed half-way, after the Kafka topics, with a FileNotFoundError)."""
    created: list[object] = []
    monkeypatch.setattr("app.commands.stream.ensure_topics", lambda *args: created.append(args))
    result = CliRunner().invoke(
        cli, ["bootstrap"], env={"ABW_CONFIG": "", "ABW_ELASTICSEARCH__TEMPLATES_DIR": str(tmp_path / "missing")}
    )
    assert result.exit_code == 1, result.output
    assert "ABW_ELASTICSEARCH__TEMPLATES_DIR" in " ".join(result.output.split()) and created == []
