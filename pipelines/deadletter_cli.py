"""`mmalign deadletter inspect|replay`: the dead-letter topic from the command line.

The topic's format, reading and replaying are deadletter/kafka_topic.py; the Kafka options
are pipelines/kafka_config.py's.
"""

from __future__ import annotations

import json
import sys

from mmalign.deadletter.kafka_topic import (
    describe,
    read_topic,
    replay,
    summarize,
    to_json_lines,
)
from mmalign.pipelines.kafka_config import kafka_failure, settings_from_args
from mmalign.schemas.kafka import KafkaConfigError


def cmd_deadletter(ns) -> int:
    """`mmalign deadletter inspect|replay`: exit 0, 1 Kafka failure, 2 bad input."""
    from kafka.errors import KafkaError  # lazy: kafka-python only where a broker is used

    try:
        settings = settings_from_args(ns)
        if ns.action == "inspect":
            records = [r for r in read_topic(settings, ns.topic, timeout_s=ns.timeout)
                       if (not ns.stage or r.letter.stage == ns.stage)
                       and (not ns.reason or r.letter.reason == ns.reason)]
            if ns.json:
                print(json.dumps({**summarize(records),
                                  "letters": [describe(r) for r in records[:ns.limit]]},
                                 sort_keys=True))
            else:
                s = summarize(records)
                print(f"{s['records']} dead letters on {ns.topic or settings.deadletter_topic}")
                for k, v in s["by_reason"].items():
                    print(f"  {v:6d}  {k}")
                for line in list(to_json_lines(records))[:ns.limit]:
                    print(line)
        else:
            result = replay(settings, stage=ns.stage, reason=ns.reason, topic=ns.topic)
            print(json.dumps(result, sort_keys=True) if ns.json else
                  f"re-published {sum(result['sent'].values())} records {result['sent']}; "
                  f"skipped (not from a topic) {result['skipped']}")
    except KafkaConfigError as e:
        print(f"mmalign deadletter: {e}", file=sys.stderr)
        return 2
    except KafkaError as e:
        print("mmalign deadletter: " + kafka_failure(
            settings, f"Kafka failed ({type(e).__name__}: {e}); is the broker up?"),
            file=sys.stderr)
        return 1
    return 0
