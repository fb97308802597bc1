"""Shared fixtures: real servers (Kafka, Flink job server) live in tests/conftest_infra.py, the
S3 API server (moto) in tests/conftest_s3.py."""

pytest_plugins = ["tests.conftest_infra", "tests.conftest_s3"]
