"""Settings, from environment variables (prefix ``ABW_``, nested with ``__``) and an optional TOML/YAML file.

Precedence: explicit arguments > environment > config file (``ABW_CONFIG`` or ``--config``) > defaults.
Secrets are ``SecretStr`` so they never appear in logs, reprs or ``check-config`` output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors.anomaly import AnomalyConfig
from detectors.exfil.config import ExfilConfig
from detectors.normalise import DEFAULT_MAX_FUTURE_SECONDS
from detectors.textclf.detector import TextClassifierConfig

PACKAGE_ROOT = Path(__file__).resolve().parent


class _Section(BaseModel):
    """A settings section: a key it does not define (a misspelt ``rule_dir``) is an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    raw_topic: str = "llm-logs-raw"
    events_topic: str = "llm-events-enriched"
    alerts_topic: str = "llm-alerts"
    dead_letter_topic: str = "llm-logs-dead-letter"
    internal_topic: str = "abusewatch-events-by-identity"  # ingest -> detect, keyed by identity
    # Topics that follow the internal topic; unset, they are named after it, so two deployments (or test runs)
    # with their own internal topic never share state.
    state_topic: str = ""  # compacted: per-partition detection state checkpoints (<internal>-state)
    campaign_topic: str = ""  # detect -> campaigns, by template signature (<internal>-campaigns)
    campaign_state_topic: str = ""  # compacted: campaign stage checkpoints (<internal>-campaigns-state)
    partitions: int = Field(4, gt=0)
    replication_factor: int = Field(1, gt=0)
    # topic max.message.bytes set by bootstrap; producer request limit
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=0)
    # target size of one internal message (a list of events); 0: 1 MiB, or half of max_message_bytes if that is less
    internal_message_bytes: int = Field(0, ge=0)
    consumer_group: str = "abusewatch"
    # a worker silent this long (killed, hung) loses its partitions to the others
    session_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _internal_messages_fit(self) -> KafkaSettings:
        self.internal_message_bytes = self.internal_message_bytes or min(1024 * 1024, self.max_message_bytes // 2)
        if self.internal_message_bytes >= self.max_message_bytes:
            raise ValueError(
                f"internal_message_bytes ({self.internal_message_bytes}) must be below max_message_bytes "
                f"({self.max_message_bytes}): internal messages are Kafka messages too"
            )
        return self

    @model_validator(mode="after")
    def _name_following_topics(self) -> KafkaSettings:
        self.state_topic = self.state_topic or f"{self.internal_topic}-state"
        self.campaign_topic = self.campaign_topic or f"{self.internal_topic}-campaigns"
        self.campaign_state_topic = self.campaign_state_topic or f"{self.internal_topic}-campaigns-state"
        return self


class ElasticsearchSettings(_Section):
    url: str = "http://127.0.0.1:19200"
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    events_index: str = "logs-abusewatch.events-default"
    alerts_index: str = "logs-abusewatch.alerts-default"
    # outside logs-*: Elastic Security lists event.kind: alert documents of logs-* as external alerts, and these are
    # the ones kept out of the queue (rules in test, detections an exception suppressed)
    shadow_alerts_index: str = "abusewatch.shadow_alerts-default"
    dead_letter_index: str = "logs-abusewatch.dead_letter-default"
    bulk_max_docs: int = Field(2000, gt=0)
    bulk_max_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_retries: int = Field(8, ge=0)  # immediate client retries of a request (CLI, bootstrap); the worker backs off
    request_timeout_s: float = Field(30.0, gt=0)
    data_streams: Literal["auto", "always", "never"] = "auto"  # auto: data streams where the cluster has them
    ilm_policy: str = "abusewatch-logs"
    retry_initial_backoff_s: float = Field(0.5, gt=0)
    retry_max_backoff_s: float = Field(30.0, gt=0)
    templates_dir: Path = PACKAGE_ROOT.parent / "deploy" / "elasticsearch"  # index/component templates, ILM


class AlertingSettings(_Section):
    """Alert hygiene (see detectors/alerting.py)."""

    window_seconds: float = Field(3600.0, gt=0)
    risk_threshold: float = Field(200.0, ge=0)
    risk_half_life_seconds: float = Field(24 * 3600.0, gt=0)


DEVELOPMENT_REDACTION_KEY = "abusewatch-development-key"
MIN_REDACTION_KEY_BYTES = 16


def weak_redaction_key(key: str) -> str | None:
    """Why ``key`` must not key a deployment's masks, or None. Masks carry a 48-bit keyed hash of the value: with a
    known key, a card number whose first six and last four digits show can be recovered in seconds."""
    if key == DEVELOPMENT_REDACTION_KEY:
        return "it is the built-in development key, which anyone can read in the source"
    if "change-me" in key.lower():
        return "it is the deployment manifests' placeholder"
    if len(key.encode("utf-8")) < MIN_REDACTION_KEY_BYTES:
        return f"it is shorter than {MIN_REDACTION_KEY_BYTES} bytes"
    return None


class DetectionSettings(_Section):
    rules_dir: Path | None = None  # extra rules on top of the built-in pack
    builtin_rules: bool = True
    redaction_key: SecretStr = SecretStr(DEVELOPMENT_REDACTION_KEY)
    # `abusewatch worker` refuses a weak key (weak_redaction_key) unless this is set: local experiments only
    allow_weak_redaction_key: bool = False
    max_record_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_text_chars: int = Field(256 * 1024, gt=0)
    # a record dated further ahead of its Kafka timestamp (replay: the wall clock) is stamped with that instead
    max_future_seconds: float = Field(DEFAULT_MAX_FUTURE_SECONDS, gt=0)
    batch_size: int = Field(500, gt=0)
    # caps on client-chosen state per partition (docs/scaling.md, "Caps on client-chosen state")
    chain_max_sessions: int = Field(100_000, gt=0)
    correlation_max_groups: int = Field(100_000, gt=0)
    batch_timeout_s: float = Field(0.1, gt=0)  # longest wait for a batch to fill: under load batches fill first
    signature_cache_size: int = Field(10_000, ge=0)  # verdicts remembered per (field, text) hash; 0 disables
    keep_raw_dead_letters: bool = False
    dead_letter_retention_days: int = Field(14, gt=0)
    exceptions_path: Path | None = None  # alert exceptions: one YAML file or a directory (detectors/exceptions.py)
    # judge the client's system / developer messages as its own words (prompt rules, classifier): behind a multi-tenant
    # gateway where each key holder writes its own; off, they are the application's trusted text (README, "Formats")
    judge_system_messages: bool = False
    # each tier's own tunables (see its module); e.g. ABW_DETECTION__CLASSIFIER__THRESHOLD=0.6
    exfil: ExfilConfig = Field(default_factory=ExfilConfig)
    classifier: TextClassifierConfig = Field(default_factory=TextClassifierConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)


LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class WorkerSettings(_Section):
    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    log_level: LogLevel = "INFO"
    data_dir: Path | None = None  # faust's datadir; None: a directory under the system temp dir
    ingest_batch_size: int = Field(200, gt=0)  # raw messages taken per ingest batch (each may hold many records)
    detect_batch_messages: int = Field(20, gt=0)  # internal messages taken per detect batch (each holds many events)
    # messages an agent may hold unprocessed: bounds memory while ES is down
    stream_buffer_messages: int = Field(400, gt=0)
    health_check_interval_s: float = Field(5.0, gt=0)
    # events remembered (keyed hash of id and content) to drop records delivered twice, shared out among the identity
    # partitions and checkpointed with each one's state (8 bytes an event: 400 kB per partition with 4 partitions)
    dedupe_capacity: int = Field(200_000, ge=0)
    checkpoint_interval_s: float = Field(30.0, gt=0)  # how often each partition's detection state is checkpointed
    # without a checkpoint, state is rebuilt from at most this many messages
    max_catch_up_messages: int = Field(20_000, ge=0)
    # how often the worker looks for changed signature rules and alert exceptions and swaps them in; 0: never
    reload_interval_s: float = Field(30.0, ge=0)
    # new container objects (net of those freed) between young garbage collections (worker, replay, demo, backtest)
    # (Python's default: 700; 0 leaves it): fewer collector passes over a batch's objects, see app/gc_policy.py
    gc_young_threshold: int = Field(10_000, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: Any) -> Any:
        """Any case, and the aliases Python's logging and Faust accept (``WARN``, ``FATAL``)."""
        if not isinstance(value, str):
            return value
        level = value.upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)


class Settings(BaseSettings):
    """All of abusewatch's configuration."""

    model_config = SettingsConfigDict(env_prefix="ABW_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ShorthandEnvSource(settings_cls), _FileSource(settings_cls))


# Flat variables that deploy/local/services.sh prints and deploy/docker-compose.yml sets; the nested
# ``ABW_KAFKA__BOOTSTRAP`` / ``ABW_ELASTICSEARCH__URL`` win over them.
SHORTHAND_ENV = {"ABW_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"), "ABW_ES_URL": ("elasticsearch", "url")}
SHELL_ONLY_ENV = {
    "ABW_REDACTION_KEY",
    "ABW_ALLOW_WEAK_REDACTION_KEY",
}  # deploy/docker-compose.yml reads them from the shell


class _ShorthandEnvSource(PydanticBaseSettingsSource):
    """Reads the flat endpoint variables of :data:`SHORTHAND_ENV`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for variable, (section, name) in SHORTHAND_ENV.items():
            value = os.environ.get(variable)
            if value:
                data.setdefault(section, {})[name] = value
        return data


class _FileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``ABW_CONFIG`` (YAML is a superset of the JSON some tools emit)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("ABW_CONFIG")
        if not path:
            return {}
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping, not {type(data).__name__}")
        return data


SETTINGS_ERROR_NOTE = "raised while loading the abusewatch settings"


def load_settings(config: Path | None = None) -> Settings:
    """Settings from the environment and ``config`` (or ``ABW_CONFIG``).

    A failure keeps its type (a ``ValidationError``, an ``OSError`` for an unreadable file, a YAML error) and gains
    :data:`SETTINGS_ERROR_NOTE`, by which the command line tells it from other errors (:func:`is_settings_error`).
    """
    if config is not None:
        os.environ["ABW_CONFIG"] = str(config)
    try:
        if problems := misspelt_variables(os.environ):
            raise ValueError("; ".join(problems))
        return Settings()
    except (ValidationError, OSError, ValueError, yaml.YAMLError) as error:
        error.add_note(SETTINGS_ERROR_NOTE)
        raise


def misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """``ABW_`` variables that look like settings but are not read, each with what was meant.

    pydantic-settings reads only the variables of known fields, so ``ABW_DETECTON__BATCH_SIZE`` (no such section),
    ``ABW_ELASTICSEARCH_URL`` (one underscore, easy to write next to the ``ABW_ES_URL`` shorthand) or
    ``ABW_RULES_DIR`` (a field without its section) would leave the default in place without a word: custom rules
    or alert exceptions not loaded. Other flat ``ABW_`` names (``ABW_CONFIG``, ``ABW_CACHE_DIR``, the local
    services' ports, and the Compose file's shell variables, :data:`SHELL_ONLY_ENV`) are not settings and
    stay allowed.
    """
    sections = {name: field.annotation for name, field in Settings.model_fields.items()}
    problems = []
    for name in sorted(environ):
        if not name.startswith("ABW_") or name in SHORTHAND_ENV or name in SHELL_ONLY_ENV:
            continue
        head, nested, _ = name.removeprefix("ABW_").lower().partition("__")
        if nested:
            if head not in sections:
                problems.append(f"{name}: no settings section {head!r} (sections: {', '.join(sections)})")
            continue
        meant = []  # the section-less field name (ABW_RULES_DIR), or one written with a single _ (ABW_WORKER_WEB_PORT)
        for section, model in sections.items():
            field = head.removeprefix(f"{section}_")
            if field in model.model_fields:
                meant.append(f"ABW_{section.upper()}__{field.upper()}")
        if meant:
            problems.append(f"{name} is not read: did you mean {' or '.join(meant)}?")
    return problems


def is_settings_error(error: BaseException) -> bool:
    """Whether ``error`` came out of :func:`load_settings`."""
    return SETTINGS_ERROR_NOTE in getattr(error, "__notes__", ())


def describe_settings_error(error: BaseException) -> str:
    """One line naming each offending setting and what is wrong with it; never the value (it may be a secret)."""
    if isinstance(error, ValidationError):
        return "; ".join(_describe_problem(problem) for problem in error.errors())
    if isinstance(error, OSError):
        return f"cannot read the settings file {error.filename} (ABW_CONFIG or --config): {error.strerror}"
    if isinstance(error, yaml.YAMLError):
        return f"the settings file {os.environ.get('ABW_CONFIG')} is not valid YAML: {' '.join(str(error).split())}"
    return " ".join(str(error).split())


def _describe_problem(problem: Any) -> str:
    path = [str(part) for part in problem["loc"]]
    variable = "ABW_" + "__".join(path).upper()
    reason = "not a setting (misspelt?)" if problem["type"] == "extra_forbidden" else problem["msg"]
    return f"{'.'.join(path)} ({variable}): {reason}"


def redaction_key_problem(settings: Settings) -> str | None:
    """Why the configured redaction key must not mask real traffic (unless weak keys are allowed), or None: the worker
    refuses to start with it, ``replay`` warns."""
    detection = settings.detection
    reason = weak_redaction_key(detection.redaction_key.get_secret_value())
    if reason is None or detection.allow_weak_redaction_key:
        return None
    return (
        f"detection.redaction_key is weak: {reason}. Masked secrets could be recovered from their keyed hashes. "
        "Set ABW_DETECTION__REDACTION_KEY to 32 random bytes (e.g. `openssl rand -base64 32`), the same for every "
        "worker and kept across restarts; for a local experiment only, ABW_DETECTION__ALLOW_WEAK_REDACTION_KEY=true."
    )
