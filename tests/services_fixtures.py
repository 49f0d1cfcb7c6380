"""Session fixtures that start real Postgres, Kafka-protocol and S3-protocol servers (see the sinks issue)."""
