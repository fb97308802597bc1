"""The stream job's consumer group on the broker: where each partition starts, and the
offsets it commits. The group only keeps offsets (the job's reader assigns its partitions
itself, it never joins the group), so both go through Kafka's admin API.

Why not a ``KafkaConsumer``: a consumer bootstraps with a metadata request for no topics,
and its first topic lookup then waits kafka-python's 100 ms metadata retry backoff; reading
the group's start offsets took 0.12-0.13 s with one against 0.02 s here, and committing at
the stop 0.16 s. Group requests a broker cannot answer yet (its offsets topic still loading,
the group's coordinator not elected: a broker's first group ever) are retried until the
client's request timeout, as the consumer did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from mmalign.schemas.kafka import KafkaSettings
from mmalign.schemas.manifest import ManifestError
from mmalign.transforms.io.kafka import PartitionSpec

T = TypeVar("T")
UNKNOWN_TOPIC = 3                      # Kafka's UNKNOWN_TOPIC_OR_PARTITION error code
DEFAULT_TIMEOUT_MS = 30_000            # kafka-python's request_timeout_ms default


def _retrying(settings: KafkaSettings, call: Callable[[], T]) -> T:
    """``call()``, again after a retriable Kafka error until the request timeout."""
    from kafka.errors import KafkaError  # lazy: kafka-python only with a broker
    timeout_s = int(settings.client.get("request_timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000
    deadline = time.monotonic() + timeout_s
    backoff_s = 0.02
    while True:
        try:
            return call()
        except KafkaError as e:
            if not e.retriable or time.monotonic() + backoff_s > deadline:
                raise
        time.sleep(backoff_s)
        backoff_s = min(1.25 * backoff_s, 0.25)


def partition_specs(settings: KafkaSettings, topics: list[str], group_id: str
                    ) -> list[PartitionSpec]:
    """One spec per partition of ``topics``, starting at ``group_id``'s committed offset, or
    at the partition's earliest offset where the group has committed none."""
    from kafka import KafkaAdminClient, TopicPartition  # lazy: kafka-python only with a broker
    from kafka.admin import OffsetSpec
    from kafka.errors import for_code
    admin = settings.make(KafkaAdminClient)
    try:
        described = {t["name"]: t for t in admin.describe_topics(topics)}
        tps = []
        for topic in topics:
            found = described.get(topic)
            if found is None or found["error_code"] == UNKNOWN_TOPIC or not found["partitions"]:
                raise ManifestError(f"Kafka topic {topic!r} does not exist on "
                                    f"{settings.bootstrap_servers}; publish to it first or "
                                    f"create it")
            if found["error_code"]:
                err = for_code(found["error_code"])
                raise err(f"describing topic {topic!r}")
            tps += [TopicPartition(topic, p)
                    for p in sorted(q["partition_index"] for q in found["partitions"])]
        group = _retrying(settings, lambda: admin.list_group_offsets({group_id: tps}))
        committed = {tp: c.offset for tp, c in group.get(group_id, {}).items()
                     if c is not None and c.offset >= 0}
        fresh = [tp for tp in tps if tp not in committed]
        starts = (_retrying(settings, lambda: admin.list_partition_offsets(
            {tp: OffsetSpec.EARLIEST for tp in fresh})) if fresh else {})
        return [PartitionSpec(tp.topic, tp.partition,
                              int(committed[tp] if tp in committed else starts[tp].offset))
                for tp in tps]
    finally:
        admin.close()


def commit_offsets(settings: KafkaSettings, group_id: str, offsets: dict[str, int]) -> None:
    """Commit ``{"topic/partition": offset}`` for ``group_id``; a partition the broker
    refuses raises its Kafka error."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import NoError
    from kafka.structs import OffsetAndMetadata
    if not offsets:
        return
    to_commit = {TopicPartition(k.rpartition("/")[0], int(k.rpartition("/")[2])):
                 OffsetAndMetadata(o, "", -1) for k, o in offsets.items()}
    admin = settings.make(KafkaAdminClient)

    def commit() -> None:
        results = admin.alter_group_offsets(group_id, to_commit)
        failed = sorted((tp, err) for tp, err in results.items() if err is not NoError)
        if failed:
            tp, err = failed[0]
            raise err(f"committing offset {to_commit[tp].offset} of {tp.topic}/"
                      f"{tp.partition} for group {group_id!r} ({len(failed)} partition(s) "
                      f"refused)")
    try:
        _retrying(settings, commit)
    finally:
        admin.close()
