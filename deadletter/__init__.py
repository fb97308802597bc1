"""Dead letters: the record, its sinks (files, Kafka topic) and the tools to inspect/replay them."""
