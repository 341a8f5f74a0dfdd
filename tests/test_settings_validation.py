"""Settings refuse what would fail later, where nobody looks: a misspelt nested key, a size or interval that is zero
or negative, a port out of range, a log level Faust cannot configure; and the refusal names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from app.settings import (
    DetectionSettings,
    Settings,
    describe_settings_error,
    is_settings_error,
    load_settings,
)
from detectors.exfil.config import ExfilConfig

SECTIONS_WITH_A_TYPO = [
    ("detection", "rule_dir"),  # rules_dir
    ("detection", "exception_path"),  # exceptions_path
    ("kafka", "bootstrap_servers"),  # bootstrap
    ("elasticsearch", "apikey"),  # api_key
    ("worker", "webport"),  # web_port
    ("detection", "alerting", "risk_treshold"),  # risk_threshold
    ("detection", "exfil", "max_scan_char"),  # max_scan_chars
]


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings from outside; and ABW_CONFIG, which ``load_settings(path)`` sets, is restored after each test."""
    for name in ("ABW_CONFIG", "ABW_KAFKA_BOOTSTRAP", "ABW_ES_URL"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _nested(path: tuple[str, ...], value: object) -> dict[str, object]:
    data: object = value
    for part in reversed(path):
        data = {part: data}
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", SECTIONS_WITH_A_TYPO, ids=".".join)
def test_a_misspelt_nested_key_in_the_file_is_refused_and_named(path: tuple[str, ...], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_nested(path, "x")))
    with pytest.raises(ValidationError) as raised:
        load_settings(config)
    assert is_settings_error(raised.value)
    assert describe_settings_error(raised.value) == (
        f"{'.'.join(path)} (ABW_{'__'.join(path).upper()}): not a setting (misspelt?)"
    )


@pytest.mark.parametrize("path", SECTIONS_WITH_A_TYPO, ids=".".join)
def test_a_misspelt_nested_variable_is_refused(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABW_" + "__".join(path).upper(), "x")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert [error["type"] for error in raised.value.errors()] == ["extra_forbidden"]


def test_exfil_config_refuses_an_unknown_tunable() -> None:
    with pytest.raises(ValidationError):
        ExfilConfig(max_scan_char=10)  # type: ignore[call-arg]
    assert ExfilConfig(max_scan_chars=10).max_scan_chars == 10


OUT_OF_BOUNDS = [
    ("detection", "batch_size", 0),
    ("detection", "batch_size", -5),
    ("detection", "max_text_chars", 0),
    ("detection", "max_text_chars", -1),
    ("detection", "max_record_bytes", 0),
    ("detection", "batch_timeout_s", 0),
    ("detection", "signature_cache_size", -1),
    ("detection", "dead_letter_retention_days", 0),
    ("detection.alerting", "window_seconds", 0),
    ("detection.alerting", "risk_half_life_seconds", 0),
    ("detection.alerting", "risk_threshold", -1),
    ("worker", "web_port", 0),
    ("worker", "web_port", 65536),
    ("worker", "ingest_batch_size", 0),
    ("worker", "detect_batch_messages", 0),
    ("worker", "stream_buffer_messages", 0),
    ("worker", "health_check_interval_s", 0),
    ("worker", "checkpoint_interval_s", 0),
    ("worker", "reload_interval_s", -1),
    ("worker", "max_catch_up_messages", -1),
    ("kafka", "partitions", 0),
    ("kafka", "replication_factor", 0),
    ("kafka", "session_timeout_s", 0),
    ("kafka", "max_message_bytes", 0),
    ("elasticsearch", "bulk_max_docs", 0),
    ("elasticsearch", "bulk_max_bytes", 0),
    ("elasticsearch", "max_retries", -1),
    ("elasticsearch", "request_timeout_s", 0),
    ("elasticsearch", "retry_initial_backoff_s", 0),
]


@pytest.mark.parametrize(("section", "name", "value"), OUT_OF_BOUNDS, ids=str)
def test_a_value_out_of_bounds_is_refused_and_named(
    section: str, name: str, value: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = (*section.split("."), name)
    variable = "ABW_" + "__".join(path).upper()
    monkeypatch.setenv(variable, str(value))
    with pytest.raises(ValidationError) as raised:
        load_settings()
    message = describe_settings_error(raised.value)
    assert message.startswith(f"{'.'.join(path)} ({variable}): Input should be "), message


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("worker", "reload_interval_s", 0),
        ("worker", "max_catch_up_messages", 0),
        ("detection", "signature_cache_size", 0),
        ("worker", "web_port", 65535),
        ("worker", "web_port", 1),
        ("elasticsearch", "max_retries", 0),
    ],
)
def test_zero_and_the_edges_stay_allowed_where_they_mean_something(
    section: str, name: str, value: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"ABW_{section.upper()}__{name.upper()}", str(value))
    assert getattr(getattr(load_settings(), section), name) == value


@pytest.mark.parametrize(
    ("given", "level"),
    [("debug", "DEBUG"), ("Warning", "WARNING"), ("INFO", "INFO"), ("warn", "WARNING"), ("FATAL", "CRITICAL")],
)
def test_log_level_is_a_real_level_in_any_case(given: str, level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABW_WORKER__LOG_LEVEL", given)
    assert load_settings().worker.log_level == level


def test_an_unknown_log_level_is_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABW_WORKER__LOG_LEVEL", "verbose")
    with pytest.raises(ValidationError) as raised:
        load_settings()
    message = describe_settings_error(raised.value)
    assert message.startswith("worker.log_level (ABW_WORKER__LOG_LEVEL): Input should be 'CRITICAL'"), message


def test_the_description_never_shows_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as raised:
        DetectionSettings(redaction_key=12345678901234567890)  # type: ignore[arg-type]
    assert "12345678901234567890" not in describe_settings_error(raised.value)


def test_a_missing_settings_file_is_a_settings_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(OSError) as raised:
        load_settings(tmp_path / "absent.yml")
    assert is_settings_error(raised.value)
    assert describe_settings_error(raised.value) == (
        f"cannot read the settings file {tmp_path / 'absent.yml'} (ABW_CONFIG or --config): No such file or directory"
    )


def test_errors_from_elsewhere_are_not_settings_errors() -> None:
    assert not is_settings_error(FileNotFoundError(2, "No such file or directory", "history.jsonl"))


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        ("ABW_DETECTON__BATCH_SIZE", "ABW_DETECTON__BATCH_SIZE: no settings section 'detecton'"),
        ("ABW_ELASTICSEARCH_URL", "ABW_ELASTICSEARCH_URL is not read: did you mean ABW_ELASTICSEARCH__URL?"),
        ("ABW_WORKER_WEB_PORT", "ABW_WORKER_WEB_PORT is not read: did you mean ABW_WORKER__WEB_PORT?"),
        ("ABW_RULES_DIR", "ABW_RULES_DIR is not read: did you mean ABW_DETECTION__RULES_DIR?"),
        ("ABW_EXCEPTIONS_PATH", "ABW_EXCEPTIONS_PATH is not read: did you mean ABW_DETECTION__EXCEPTIONS_PATH?"),
    ],
)
def test_a_misspelt_top_level_variable_is_refused_and_named(
    variable: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-settings reads only known fields: without this check the default would silently stay."""
    monkeypatch.setenv(variable, "9")
    with pytest.raises(ValueError, match=r"not read|no settings section") as raised:
        load_settings()
    assert said in str(raised.value)


def test_flat_variables_that_are_not_settings_stay_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (
        "ABW_CONFIG",
        "ABW_CACHE_DIR",
        "ABW_ES_URL",
        "ABW_KAFKA_BOOTSTRAP",
        "ABW_KAFKA_PORT",
        "ABW_ES_PORT",
        "ABW_REDACTION_KEY",  # the Compose file's shell variables
        "ABW_ALLOW_WEAK_REDACTION_KEY",
    ):
        monkeypatch.setenv(variable, "")
    monkeypatch.setenv("ABW_ES_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ABW_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    assert load_settings().elasticsearch.url == "http://127.0.0.1:9"
