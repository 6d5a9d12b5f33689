"""Metrics of the Kafka intake (beside `sluice_kafka_consumer_lag` and the event metrics); the
storage listener's `kafka` source reports under the same names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ERRORS = Counter(
    "sluice_kafka_listener_errors_total",
    "Failures of the Kafka listener by stage (connect, fetch, position, admit, commit, "
    "subscribe, probe, database); every one is retried",
    ["stage"],
)
BROKER_UP = Gauge(
    "sluice_kafka_listener_broker_up",
    "1 while the last probe of the cluster's broker succeeded, else 0",
    ["cluster"],
)
SUBSCRIBED_TOPICS = Gauge(
    "sluice_kafka_listener_subscribed_topics",
    "Topics the listener's consumer group follows on the cluster",
    ["cluster"],
)
ADMITTED_BATCH = Histogram(
    "sluice_kafka_listener_batch_records",
    "Records per admission transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
SKIPPED = Counter(
    "sluice_kafka_listener_skipped_total",
    "Records not handed to intake, by reason (before_trigger: older than every trigger on a "
    "partition read for the first time; revoked: dropped at a rebalance, redelivered later; "
    "backpressure: put back while a workflow they feed is at max_waiting, fetched again later)",
    ["reason"],
)
REVOCATIONS = Counter(
    "sluice_kafka_listener_revocations_total",
    "Rebalances that took partitions from this listener (joins, leaves, subscription changes)",
)
STALLED = Gauge(
    "sluice_kafka_listener_stalled",
    "1 while the listener has no partitions assigned and its topics hold messages nobody "
    "consumes (for SLUICE_KAFKA_STALL_REPORT_S or longer), else 0",
    ["cluster"],
)
REJOINS = Counter(
    "sluice_kafka_listener_rejoins_total",
    "Times the listener left its group and joined again after a stall "
    "(SLUICE_KAFKA_STALL_REJOIN_S)",
)
