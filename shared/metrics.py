"""Prometheus metrics. One registry per process; every service exposes /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS_RECEIVED = Counter("sluice_events_received_total", "Events handed to intake", ["source"])
EVENT_OUTCOMES = Counter("sluice_event_outcomes_total", "Per-trigger event outcomes", ["outcome"])
INSTANCES_CREATED = Counter("sluice_instances_created_total", "Instances created", ["kind"])
INSTANCES = Gauge("sluice_instances", "Instances by state (sampled)", ["state"])
EVENT_TO_NODE_START = Histogram(
    "sluice_event_to_node_start_seconds",
    "From event receipt to the first node attempt start",
    buckets=_LATENCY_BUCKETS,
)
NODE_QUEUE_WAIT = Histogram(
    "sluice_node_queue_wait_seconds", "From node ready to claimed", buckets=_LATENCY_BUCKETS
)
NODE_DURATION = Histogram(
    "sluice_node_duration_seconds", "Node attempt duration", ["type", "result"]
)
SLOTS_IN_USE = Gauge(
    "sluice_resource_group_slots_in_use", "Running attempts per resource group", ["group"]
)
KAFKA_LAG = Gauge(
    "sluice_kafka_consumer_lag",
    "Consumer lag (cluster: `default` or `<workspace id>/<connection>`)",
    ["topic", "partition", "cluster"],
)
COALESCE_WINDOWS = Counter(
    "sluice_coalesce_windows_total", "Coalescing windows opened and closed", ["action"]
)
