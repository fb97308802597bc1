"""I/O: the Kafka reader (``kafka``) and the aligned Parquet dataset (``parquet``)."""
