"""Assembled pipelines (backfill, stream), their options and CLIs, and the sample recording."""
