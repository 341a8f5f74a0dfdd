"""Settings, from environment variables (prefix ``ABW_``, nested with ``__``) and an optional TOML/YAML file.

Precedence: explicit arguments > environment > config file (``ABW_CONFIG`` or ``--config``) > defaults.
Secrets are ``SecretStr`` so they never appear in logs, reprs or ``check-config`` output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors.anomaly import AnomalyConfig
from detectors.exfil.config import ExfilConfig
from detectors.normalise import DEFAULT_MAX_FUTURE_SECONDS
from detectors.textclf.detector import TextClassifierConfig

PACKAGE_ROOT = Path(__file__).resolve().parent


class KafkaSettings(BaseModel):
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
    partitions: int = 4
    replication_factor: int = 1
    max_message_bytes: int = 16 * 1024 * 1024  # topic max.message.bytes set by bootstrap; producer request limit
    internal_message_bytes: int = 1024 * 1024  # target size of one internal message (a list of events)
    consumer_group: str = "abusewatch"
    session_timeout_s: float = 30.0  # a worker silent this long (killed, hung) loses its partitions to the others

    @model_validator(mode="after")
    def _name_following_topics(self) -> KafkaSettings:
        self.state_topic = self.state_topic or f"{self.internal_topic}-state"
        self.campaign_topic = self.campaign_topic or f"{self.internal_topic}-campaigns"
        self.campaign_state_topic = self.campaign_state_topic or f"{self.internal_topic}-campaigns-state"
        return self


class ElasticsearchSettings(BaseModel):
    url: str = "http://127.0.0.1:19200"
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    events_index: str = "logs-abusewatch.events-default"
    alerts_index: str = "logs-abusewatch.alerts-default"
    shadow_alerts_index: str = "logs-abusewatch.shadow_alerts-default"
    dead_letter_index: str = "logs-abusewatch.dead_letter-default"
    bulk_max_docs: int = 2000
    bulk_max_bytes: int = 10 * 1024 * 1024
    max_retries: int = 8
    request_timeout_s: float = 30.0
    data_streams: Literal["auto", "always", "never"] = "auto"  # auto: data streams where the cluster has them
    ilm_policy: str = "abusewatch-logs"
    retry_initial_backoff_s: float = 0.5
    retry_max_backoff_s: float = 30.0
    templates_dir: Path = PACKAGE_ROOT.parent / "deploy" / "elasticsearch"  # index/component templates, ILM


class AlertingSettings(BaseModel):
    """Alert hygiene (see detectors/alerting.py)."""

    window_seconds: float = 3600.0
    risk_threshold: float = 200.0
    risk_half_life_seconds: float = 24 * 3600.0


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


class DetectionSettings(BaseModel):
    rules_dir: Path | None = None  # extra rules on top of the built-in pack
    builtin_rules: bool = True
    redaction_key: SecretStr = SecretStr(DEVELOPMENT_REDACTION_KEY)
    # `abusewatch worker` refuses a weak key (weak_redaction_key) unless this is set: local experiments only
    allow_weak_redaction_key: bool = False
    max_record_bytes: int = 4 * 1024 * 1024
    max_text_chars: int = 256 * 1024
    # a record dated further ahead of its Kafka timestamp (replay: the wall clock) is stamped with that instead
    max_future_seconds: float = Field(DEFAULT_MAX_FUTURE_SECONDS, gt=0)
    batch_size: int = 500
    batch_timeout_s: float = 0.1  # longest wait for a batch to fill: under load batches fill first
    signature_cache_size: int = 10_000  # verdicts remembered per (field, text) hash; 0 disables
    keep_raw_dead_letters: bool = False
    dead_letter_retention_days: int = 14
    exceptions_path: Path | None = None  # alert exceptions: one YAML file or a directory (detectors/exceptions.py)
    # each tier's own tunables (see its module); e.g. ABW_DETECTION__CLASSIFIER__THRESHOLD=0.6
    exfil: ExfilConfig = Field(default_factory=ExfilConfig)
    classifier: TextClassifierConfig = Field(default_factory=TextClassifierConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)


class WorkerSettings(BaseModel):
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    log_level: str = "INFO"
    data_dir: Path | None = None  # faust's datadir; None: a directory under the system temp dir
    ingest_batch_size: int = 200  # raw messages taken per ingest batch (each may hold many records)
    detect_batch_messages: int = 20  # internal messages taken per detect batch (each holds many events)
    stream_buffer_messages: int = 400  # messages an agent may hold unprocessed: bounds memory while ES is down
    health_check_interval_s: float = 5.0
    # events remembered (keyed hash of id and content) to drop records delivered twice, shared out among the identity
    # partitions and checkpointed with each one's state (8 bytes an event: 400 kB per partition with 4 partitions)
    dedupe_capacity: int = Field(200_000, ge=0)
    checkpoint_interval_s: float = 30.0  # how often each partition's detection state is checkpointed
    max_catch_up_messages: int = 20_000  # without a checkpoint, state is rebuilt from at most this many messages
    # how often the worker looks for changed signature rules and alert exceptions and swaps them in; 0: never
    reload_interval_s: float = 30.0


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


def load_settings(config: Path | None = None) -> Settings:
    """Settings from the environment and ``config`` (or ``ABW_CONFIG``)."""
    if config is not None:
        os.environ["ABW_CONFIG"] = str(config)
    return Settings()
