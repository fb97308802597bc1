"""Group requests a broker cannot answer yet are retried (pipelines/group_offsets.py): a
broker's first consumer group ever waits for its offsets topic (``CoordinatorNotAvailable``,
``CoordinatorLoadInProgress`` for ~0.15 s); errors that are not retriable surface at once, and
retries stop at the client's request timeout."""

from __future__ import annotations

import pytest
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    UnknownMemberIdError,
)

from mmalign.pipelines.group_offsets import _retrying
from mmalign.schemas.kafka import KafkaSettings


def _failing(*errors):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]("broker says no")
        return "offsets"
    return call, calls


def test_retriable_errors_are_retried_until_the_broker_answers():
    call, calls = _failing(CoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                           CoordinatorLoadInProgressError)
    assert _retrying(KafkaSettings(), call) == "offsets"
    assert len(calls) == 4


def test_other_errors_are_not_retried():
    call, calls = _failing(UnknownMemberIdError)
    with pytest.raises(UnknownMemberIdError):
        _retrying(KafkaSettings(), call)
    assert len(calls) == 1


def test_retries_stop_at_the_request_timeout():
    call, calls = _failing(*[CoordinatorNotAvailableError] * 1000)
    with pytest.raises(CoordinatorNotAvailableError):
        _retrying(KafkaSettings(client={"request_timeout_ms": 300}), call)
    assert 1 < len(calls) < 1000
