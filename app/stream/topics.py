"""Kafka topics the stream needs: created by ``abusewatch bootstrap``, checked by ``worker`` and ``check-config``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from app.settings import KafkaSettings
from app.stream.kafka_config import kafka_python_options

_ADMIN_TIMEOUT_MS = 15_000


def topic_names(kafka: KafkaSettings) -> list[str]:
    return [
        kafka.raw_topic,
        kafka.internal_topic,
        kafka.state_topic,
        kafka.campaign_topic,
        kafka.campaign_state_topic,
        kafka.events_topic,
        kafka.alerts_topic,
        kafka.dead_letter_topic,
    ]


def topic_configs(kafka: KafkaSettings, name: str) -> dict[str, str]:
    """Topic-level configuration: the message size limit everywhere; the state topic keeps only the newest
    checkpoint per partition (compaction, eager enough that superseded checkpoints do not pile up)."""
    configs = {"max.message.bytes": str(kafka.max_message_bytes)}
    if name in (kafka.state_topic, kafka.campaign_state_topic):
        configs |= {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
    return configs


@contextmanager
def admin_client(kafka: KafkaSettings, timeout_ms: int = _ADMIN_TIMEOUT_MS) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(**kafka_python_options(kafka), request_timeout_ms=timeout_ms, client_id="abusewatch-admin")
    try:
        yield admin
    finally:
        admin.close()


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int | None]:
    """Partition count of each topic, ``None`` for a topic that does not exist."""
    existing = set(admin.list_topics())
    counts: dict[str, int | None] = dict.fromkeys(names)
    present = [name for name in names if name in existing]
    if present:
        for description in admin.describe_topics(present):
            name = description.get("name") or description.get("topic")  # kafka-python 3 says "name", 2 "topic"
            counts[name] = len(description["partitions"])
    return counts


def ensure_topics(kafka: KafkaSettings) -> list[str]:
    """Create missing topics with the configured partitions, replication and message size; report each topic.

    Existing topics are left alone (a partition count can only grow, and changing it would move identities to
    other partitions), but a count that differs from the settings is reported. The state topic gets the internal
    topic's partition count, whatever the settings say: partition p's state lives in its partition p, and the
    campaign stage runs with as many partitions.
    """
    report = []
    with admin_client(kafka) as admin:
        counts = partition_counts(admin, topic_names(kafka))
        wanted = dict.fromkeys(counts, kafka.partitions)
        for follower in (kafka.state_topic, kafka.campaign_topic, kafka.campaign_state_topic):
            wanted[follower] = counts[kafka.internal_topic] or kafka.partitions
        missing = [
            NewTopic(
                name,
                num_partitions=wanted[name],
                replication_factor=kafka.replication_factor,
                topic_configs=topic_configs(kafka, name),
            )
            for name, count in counts.items()
            if count is None
        ]
        if missing:
            with suppress(TopicAlreadyExistsError):  # created concurrently by another bootstrap: fine
                admin.create_topics(missing, timeout_ms=_ADMIN_TIMEOUT_MS)
        for name, count in counts.items():
            if count is None:
                report.append(f"topic {name}: created ({wanted[name]} partitions)")
            elif count != wanted[name]:
                report.append(f"topic {name}: exists with {count} partitions (expected {wanted[name]}; kept)")
            else:
                report.append(f"topic {name}: exists")
    return report
