"""Shared fixtures: real servers (Kafka, Flink job server) live in tests/conftest_infra.py."""

pytest_plugins = ["tests.conftest_infra"]
