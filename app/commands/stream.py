"""``abusewatch worker | bootstrap | produce | check-config``: run and operate the stream."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from elastic_transport import ConnectionError as ESConnectionError
from elastic_transport import TlsError
from elasticsearch import ApiError, AuthenticationException, AuthorizationException, Elasticsearch
from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.text import Text

from app.files import ensure_readable
from app.gc_policy import tune_garbage_collector
from app.replay import STDIN, read_lines
from app.settings import Settings, load_settings, redaction_key_problem
from app.sinks import es_setup
from app.sinks.elasticsearch import client_options
from app.stream.kafka_config import diagnose, kafka_python_options
from app.stream.topics import admin_client, ensure_topics, partition_counts, topic_names
from app.terminal import terminal_safe

console = Console(stderr=True)
stdout = Console()  # check-config's settings, on stdout for a file or `| jq`; its verdict stays on stderr
CONFIG_OPTION = typer.Option(None, "--config", help="Settings file (YAML); default: ABW_CONFIG, then environment.")
_CHECK_TIMEOUT_S = 10


def register(cli: typer.Typer) -> None:
    for noisy in ("kafka", "elastic_transport"):  # their per-retry tracebacks drown the plain-words report
        logging.getLogger(noisy).setLevel(logging.ERROR)
    cli.command("worker")(worker_command)
    cli.command("bootstrap")(bootstrap_command)
    cli.command("produce")(produce_command)
    cli.command("check-config")(check_config_command)


# -- worker -----------------------------------------------------------------------------------------------------


def worker_command(config: Path | None = CONFIG_OPTION) -> None:
    """Run a stream worker (Faust): ingest, detect, archive dead letters; /live, /health, /metrics on the web port."""
    import faust

    from app.commands.exceptions import exit_on_bad_exceptions
    from app.stream.web import StartingServer, register_web
    from app.stream.worker import StreamWorker
    from detectors.exceptions import load_exceptions

    settings = load_settings(config)
    if problem := redaction_key_problem(settings):
        raise typer.Exit(_fail(problem))
    exceptions_path = settings.detection.exceptions_path
    if exceptions_path is not None:
        with exit_on_bad_exceptions():  # a bad file ends the command before the wait for Kafka
            load_exceptions(exceptions_path)
    kafka, web = settings.kafka, settings.worker
    try:
        starting = StartingServer(web)
    except OSError as error:
        raise typer.Exit(_fail(f"cannot serve /live and /health on {web.web_host}:{web.web_port}: {error}")) from None
    with starting as status:  # the probes see a worker starting (live, not ready) until Faust's web server takes over
        status.waiting_for = "Kafka"
        counts = _guard("Kafka", settings, lambda: _topic_counts(settings))
        missing = [name for name, count in counts.items() if count is None]
        if missing:
            raise typer.Exit(_fail(f"Kafka topics missing: {', '.join(missing)}. Run `abusewatch bootstrap` first."))
        status.waiting_for = "Elasticsearch"
        op_types = _wait_for_op_types(settings, on_retry=status.retrying)
        absent = _guard("Elasticsearch", settings, lambda: _missing_targets(settings))
        if absent:  # a worker writing first would let Elasticsearch guess the mappings (text for rule.id, ...)
            raise typer.Exit(_fail(f"Elasticsearch: {', '.join(absent)} missing. Run `abusewatch bootstrap` first."))
        status.waiting_for, status.error = "the rule pack to compile", None
        partitions = counts[kafka.internal_topic] or 1
        with exit_on_bad_exceptions():  # loaded again, as they are now, with the rules they are checked against
            stream = StreamWorker(settings, internal_partitions=partitions, op_types=op_types)
    register_web(stream)
    tune_garbage_collector(settings.worker.gc_young_threshold)
    console.print(
        f"worker {kafka.consumer_group}: {kafka.raw_topic} -> {kafka.internal_topic} "
        f"({counts[kafka.internal_topic]} partitions) -> Elasticsearch {settings.elasticsearch.url}; "
        f"web on {settings.worker.web_host}:{settings.worker.web_port}"
    )
    faust.Worker(stream.app, loglevel=settings.worker.log_level.lower()).execute_from_commandline()


def _topic_counts(settings: Settings) -> dict[str, int | None]:
    with admin_client(settings.kafka) as admin:
        return partition_counts(admin, topic_names(settings.kafka))


def _missing_targets(settings: Settings) -> list[str]:
    with Elasticsearch(**client_options(settings.elasticsearch)) as client:
        return es_setup.missing(client, settings.elasticsearch)


def _wait_for_op_types(settings: Settings, on_retry: Callable[[str], None]) -> dict[str, str]:
    """Bulk op types per target; waits (with backoff) while Elasticsearch is unreachable or refuses at start-up,
    telling ``on_retry`` why."""
    delay = settings.elasticsearch.retry_initial_backoff_s
    while True:
        try:
            with Elasticsearch(**client_options(settings.elasticsearch)) as client:
                return es_setup.op_types(client, settings.elasticsearch)
        except (ESConnectionError, ApiError) as error:
            problem = es_problem(error, settings)
            on_retry(problem)
            console.print(_labelled("Elasticsearch not ready: ", f"{problem}; retrying in {delay:.0f}s"))
            time.sleep(delay)
            delay = min(delay * 2, settings.elasticsearch.retry_max_backoff_s)


# -- bootstrap --------------------------------------------------------------------------------------------------


def bootstrap_command(config: Path | None = CONFIG_OPTION) -> None:
    """Create the Kafka topics and install Elasticsearch templates, ILM policies and indices (idempotent)."""
    settings = load_settings(config)
    templates = settings.elasticsearch.templates_dir
    if not (templates / "index").is_dir():  # checked before anything is created
        raise typer.Exit(
            _fail(
                f"no Elasticsearch templates in {templates}: set elasticsearch.templates_dir "
                "(ABW_ELASTICSEARCH__TEMPLATES_DIR) to the release's deploy/elasticsearch directory (the image sets "
                "it; an installed wheel does not ship it)"
            )
        )
    lines = _guard("Kafka", settings, lambda: ensure_topics(settings.kafka))
    with Elasticsearch(**client_options(settings.elasticsearch)) as client:
        lines += _guard("Elasticsearch", settings, lambda: es_setup.install(client, settings))
    for line in lines:
        console.print(line)
    changed = sum(1 for line in lines if ": created" in line or ": updated" in line)
    console.print(f"bootstrap done: {changed} created or updated, {len(lines) - 1 - changed} unchanged")


# -- produce ----------------------------------------------------------------------------------------------------


def produce_command(
    files: list[str] = typer.Argument(..., help="JSONL files (any supported format); '-' reads stdin."),
    topic: str | None = typer.Option(None, "--topic", help="Target topic; default: kafka.raw_topic."),
    batch_records: int = typer.Option(1, "--batch-records", min=1, help="Lines per message (NDJSON when > 1)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Send JSONL lines to the raw topic: one per message, or N per message as NDJSON (like log shippers)."""
    ensure_readable(files, "FILES")
    settings = load_settings(config)
    target = topic or settings.kafka.raw_topic
    producer = _guard(
        "Kafka",
        settings,
        lambda: KafkaProducer(
            **kafka_python_options(settings.kafka),
            acks="all",
            linger_ms=20,
            max_request_size=settings.kafka.max_message_bytes,
            client_id="abusewatch-produce",
        ),
    )
    started = time.perf_counter()
    counts = {"records": 0, "messages": 0, "bytes": 0, "failed": 0}

    def on_error(error: Exception) -> None:
        counts["failed"] += 1
        console.print(f"[red]send failed:[/red] {_short(error)}")

    def send(lines: list[bytes]) -> None:
        payload = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        if len(lines) == 1:
            payload = payload.rstrip(b"\n")
        producer.send(target, value=payload).add_errback(on_error)
        counts["messages"] += 1
        counts["records"] += len(lines)
        counts["bytes"] += len(payload)

    total = sum(Path(name).stat().st_size for name in files if name != STDIN) or None
    try:
        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task(f"producing to {target}", total=total)
            for name in files:
                pending: list[bytes] = []
                for line, _origin in read_lines(name, settings.detection.max_record_bytes):
                    pending.append(line)
                    progress.advance(task, len(line))
                    if len(pending) >= batch_records:
                        send(pending)
                        pending = []
                if pending:
                    send(pending)
        producer.flush()
    finally:
        producer.close()
    seconds = time.perf_counter() - started
    console.print(
        f"produced {counts['records']} records in {counts['messages']} messages ({counts['bytes']} bytes) "
        f"to {target} in {seconds:.1f}s; {counts['failed']} failed"
    )
    if counts["failed"]:
        raise typer.Exit(1)


# -- check-config -----------------------------------------------------------------------------------------------


def check_config_command(config: Path | None = CONFIG_OPTION) -> None:
    """Print the settings as JSON (stdout), connect to Kafka and Elasticsearch, and say in plain words what is wrong
    (stderr, exit 1)."""
    settings = load_settings(config)
    stdout.print_json(data=settings.model_dump(mode="json"))  # SecretStr fields print as '**********'
    problems = missing_files(settings) + exception_problems(settings)
    problems = problems or check_kafka(settings) + check_elasticsearch(settings)
    problems += [problem] if (problem := redaction_key_problem(settings)) else []
    for problem in problems:
        console.print(_labelled("problem: ", problem), soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print("[green]configuration OK[/green]: Kafka and Elasticsearch reachable, topics and templates present")


def missing_files(settings: Settings) -> list[str]:
    """TLS files named in the settings that cannot be read (clients would only say "cannot connect")."""
    named = {
        "kafka.ssl_cafile": settings.kafka.ssl_cafile,
        "kafka.ssl_certfile": settings.kafka.ssl_certfile,
        "kafka.ssl_keyfile": settings.kafka.ssl_keyfile,
        "elasticsearch.ca_certs": settings.elasticsearch.ca_certs,
    }
    return [
        f"{name} is {path}, which is not a readable file"
        for name, path in named.items()
        if path is not None and not (path.is_file() and os.access(path, os.R_OK))
    ]


def exception_problems(settings: Settings) -> list[str]:
    """What is wrong with the configured alert exceptions file (every entry's problem in one message), if anything."""
    from app.engine import build_exceptions  # the detection engine loads only when a command needs it
    from detectors.exceptions import ExceptionsError

    try:
        build_exceptions(settings)
    except ExceptionsError as error:
        return [str(error)]
    return []


def check_kafka(settings: Settings) -> list[str]:
    """Connect and log in to the first broker (precise TLS/SASL diagnosis), then check the topics."""
    kafka = settings.kafka
    problem = diagnose(kafka, _CHECK_TIMEOUT_S)
    if problem:
        return [problem]
    try:
        with admin_client(kafka, timeout_ms=_CHECK_TIMEOUT_S * 1000) as admin:
            counts = partition_counts(admin, topic_names(kafka))
    except Exception as error:  # every failure is reported in words, never as a traceback
        return [kafka_problem(error, settings)]
    return [f"Kafka topic {name} is missing (run `abusewatch bootstrap`)" for name, n in counts.items() if n is None]


def check_elasticsearch(settings: Settings) -> list[str]:
    options = client_options(settings.elasticsearch) | {"request_timeout": _CHECK_TIMEOUT_S, "max_retries": 0}
    try:
        with Elasticsearch(**options) as client:
            client.cluster.health(timeout=f"{_CHECK_TIMEOUT_S}s")
            absent = es_setup.missing(client, settings.elasticsearch)
    except Exception as error:  # every failure is reported in words, never as a traceback
        return [es_problem(error, settings)]
    return [f"Elasticsearch {name} is missing (run `abusewatch bootstrap`)" for name in absent]


def kafka_problem(error: Exception, settings: Settings) -> str:
    """A plain-words explanation of a Kafka connection failure (no secrets)."""
    kafka = settings.kafka
    where = f"Kafka at {kafka.bootstrap} ({kafka.security_protocol})"
    text = _short(error)
    if isinstance(error, FileNotFoundError | IsADirectoryError):
        return f"{where}: a TLS file does not exist: {error.filename}"
    if isinstance(error, ssl.SSLError) or "SSL" in text or "certificate" in text.lower():
        return f"{where}: TLS failed ({text}); check kafka.ssl_cafile and that the broker's listener uses TLS"
    if "auth" in text.lower() or "sasl" in text.lower():
        return f"{where}: authentication failed ({text}); check kafka.sasl_mechanism, sasl_username, sasl_password"
    if isinstance(error, KafkaTimeoutError | KafkaConnectionError):
        return (
            f"cannot reach {where}: no broker answered; is it running, are host and port right, and does the "
            "listener expect this security protocol?"
        )
    if isinstance(error, KafkaError):
        return f"{where}: {text}"
    return f"{where}: unexpected {text}"


def es_problem(error: Exception, settings: Settings) -> str:
    """A plain-words explanation of an Elasticsearch connection failure (no secrets)."""
    where = f"Elasticsearch at {settings.elasticsearch.url}"
    if isinstance(error, TlsError):
        return f"{where}: TLS failed ({_short(error)}); check elasticsearch.ca_certs and the URL's scheme"
    if isinstance(error, AuthenticationException):
        return f"{where}: credentials rejected (401); check elasticsearch.api_key or username/password"
    if isinstance(error, AuthorizationException):
        return f"{where}: the user lacks privileges (403): {_short(error)}"
    if isinstance(error, ESConnectionError):
        return f"cannot reach {where}: {_short(error)}; is it running, are host, port and scheme right?"
    if isinstance(error, ApiError):
        return f"{where}: HTTP {error.status_code}: {_short(error)}"
    return f"{where}: unexpected {_short(error)}"


# -- shared -----------------------------------------------------------------------------------------------------


def _guard(service: str, settings: Settings, action: Callable[[], Any]) -> Any:
    """Run ``action``; a connection failure ends the command with a plain message and exit code 1.

    Kafka is asked first, in one connection attempt (:func:`diagnose`): kafka-python retries an unreachable broker
    for about 30 s, logging an error each time, before it gives up with no cause."""
    if service == "Kafka" and (problem := diagnose(settings.kafka, _CHECK_TIMEOUT_S)):
        raise typer.Exit(_fail(problem))
    try:
        return action()
    except Exception as error:  # reported in words, not as a traceback
        if service == "Kafka":  # kafka-python says only "Unable to bootstrap": ask the broker once more for the cause
            problem = diagnose(settings.kafka, _CHECK_TIMEOUT_S) or kafka_problem(error, settings)
        else:
            problem = es_problem(error, settings)
        raise typer.Exit(_fail(problem)) from None


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def _fail(message: str) -> int:
    console.print(_labelled("error: ", message), soft_wrap=True)  # paths stay whole, to copy
    return 1


def _labelled(label: str, message: str) -> Text:
    """A red label and ``message`` as plain text: messages quote files and settings (an exceptions entry copied from
    an alert), which must neither be read as Rich markup nor drive the terminal."""
    return Text.assemble((label, "red"), terminal_safe(message))
