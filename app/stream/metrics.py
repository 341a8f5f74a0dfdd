"""Prometheus metrics of the stream worker, served at ``/metrics`` (default registry, so process metrics too)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RAW_MESSAGES = Counter("abusewatch_raw_messages_total", "Raw Kafka messages taken by ingest")
EVENTS_IN = Counter("abusewatch_events_in_total", "Events normalised by ingest")
EVENTS_DETECTED = Counter("abusewatch_events_detected_total", "Events run through the detection pipeline")
DUPLICATE_EVENTS = Counter("abusewatch_duplicate_events_total", "Events dropped as already processed (same id)")
ALERTS_OUT = Counter("abusewatch_alerts_total", "Alert documents written", ["kind"])  # kind: alert | shadow
SUPPRESSED = Counter(
    "abusewatch_suppressed_detections_total",
    "Detections an alert exception sent to the shadow alerts",
    ["exception", "rule"],
)
DEAD_LETTERS = Counter("abusewatch_dead_letters_total", "Dead letters raised", ["stage", "reason"])
BATCH_SECONDS = Histogram(
    "abusewatch_batch_seconds",
    "Wall time of one agent batch, from taking it to acknowledging it",
    ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ES_DOCUMENTS = Counter("abusewatch_es_documents_total", "Documents Elasticsearch acknowledged", ["outcome"])
ES_BULK_RETRIES = Counter("abusewatch_es_bulk_retries_total", "Bulk retry rounds (documents not yet acknowledged)")
ES_REJECTIONS = Counter("abusewatch_es_rejections_total", "Documents Elasticsearch rejected for good", ["index"])
ES_UP = Gauge("abusewatch_elasticsearch_up", "1 when the last Elasticsearch health probe succeeded")
CONSUMER_LAG = Gauge("abusewatch_consumer_lag", "Messages between the read offset and the end", ["topic", "partition"])
CHECKPOINTS = Counter("abusewatch_state_checkpoints_total", "Partition state checkpoints", ["outcome"])
CHECKPOINT_BYTES = Histogram(
    "abusewatch_state_checkpoint_bytes",
    "Size of one partition's state checkpoint",
    buckets=(1e3, 1e4, 1e5, 1e6, 4e6, 16e6, 64e6),
)
STATE_EVICTIONS = Counter(
    "abusewatch_state_evictions_total",
    "Entries a tier forgot at its cap on client-chosen state (docs/scaling.md, caps)",
    ["detector"],
)
STATE_REFUSALS = Counter(
    "abusewatch_state_refusals_total",
    "Records a tier turned away unjudged at its cap on client-chosen state (docs/scaling.md, caps)",
    ["detector"],
)
STATE_RESTORES = Counter("abusewatch_state_restores_total", "Partitions given state on arrival", ["source"])
STATE_REPLAYED_EVENTS = Counter("abusewatch_state_replayed_events_total", "Events replayed for state only")
STATE_SKIPPED_MESSAGES = Counter(
    "abusewatch_state_skipped_messages_total", "Internal messages redelivered after their effect was already kept"
)
# kind: rules | exceptions; outcome: applied | rejected (the running ones stay)
RELOADS = Counter("abusewatch_reloads_total", "Hot reloads of changed rule or exception files", ["kind", "outcome"])
