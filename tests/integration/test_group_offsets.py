"""The stream job's consumer group on a real broker (pipelines/group_offsets.py): where each
partition starts (the group's committed offset, else the partition's earliest offset, which is
not 0 once old records were deleted), the commits, and the refusals a user can run into."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from mmalign.pipelines.group_offsets import commit_offsets, partition_specs
from mmalign.schemas import kafka as kafka_schema
from mmalign.schemas.manifest import ManifestError

pytestmark = pytest.mark.slow


def _fill(settings, topic: str, partitions: int, n: int) -> None:
    producer = settings.make(KafkaProducer)
    for p in range(partitions):
        for i in range(n):
            producer.send(topic, f"{p}-{i}".encode(), partition=p)
    producer.flush()
    producer.close()


def test_start_offsets_come_from_the_group_else_the_earliest_record(kafka_broker, fresh_topics):
    settings, tag = fresh_topics(3)
    video, audio = settings.topics["video"], settings.topics["audio"]
    _fill(settings, video, 3, 5)
    _fill(settings, audio, 3, 2)
    admin = settings.make(KafkaAdminClient)
    try:                               # retention removed video/1's first 3 records
        admin.delete_records({TopicPartition(video, 1): 3})
    finally:
        admin.close()
    group = f"g-{tag}"
    first = partition_specs(settings, [video, audio], group)
    assert [(s.topic, s.partition, s.start) for s in first] == [
        (video, 0, 0), (video, 1, 3), (video, 2, 0), (audio, 0, 0), (audio, 1, 0),
        (audio, 2, 0)]
    commit_offsets(settings, group, {f"{video}/0": 4, f"{video}/2": 5, f"{audio}/1": 1})
    again = {(s.topic, s.partition): s.start
             for s in partition_specs(settings, [video, audio], group)}
    assert again == {(video, 0): 4, (video, 1): 3, (video, 2): 5, (audio, 0): 0,
                     (audio, 1): 1, (audio, 2): 0}
    # what a standard consumer of the group (a lag tool) reads back
    consumer = settings.make(KafkaConsumer, group_id=group, enable_auto_commit=False)
    try:
        assert consumer.committed(TopicPartition(video, 2)) == 5
    finally:
        consumer.close()


def test_a_missing_topic_is_named(kafka_broker, fresh_topics):
    settings, tag = fresh_topics()
    with pytest.raises(ManifestError, match=f"'nope.{tag}' does not exist"):
        partition_specs(settings, [settings.topics["video"], f"nope.{tag}"], f"g-{tag}")


def test_the_first_client_teaches_the_broker_version_to_the_next(kafka_broker, fresh_topics):
    """The admin client's probe is remembered: the job's reader (a consumer) is made with the
    version and skips kafka-python's first metadata backoff (0.1 s of every job start)."""
    settings, tag = fresh_topics()
    kafka_schema._BROKER_VERSIONS.clear()
    partition_specs(settings, [settings.topics["video"]], f"g-{tag}")
    assert settings.common().get("api_version") is not None


def test_committing_for_a_group_another_consumer_is_using_fails(kafka_broker, fresh_topics):
    """The job keeps the group to itself: when a subscribed consumer holds it, the broker
    refuses the commit and the error says which offset and group."""
    settings, tag = fresh_topics()
    topic, group = settings.topics["text"], f"g-{tag}"
    _fill(settings, topic, 1, 3)
    member = settings.make(KafkaConsumer, group_id=group, enable_auto_commit=False,
                           auto_offset_reset="earliest")
    member.subscribe([topic])
    try:
        for _ in range(50):                     # until the group has assigned the partition
            member.poll(timeout_ms=200)
            if member.assignment():
                break
        assert member.assignment()
        with pytest.raises(KafkaError, match=f"offset 2 of {topic}/0 for group '{group}'"):
            commit_offsets(settings, group, {f"{topic}/0": 2})
    finally:
        member.close()
