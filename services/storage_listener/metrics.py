"""Metrics of the storage listener beyond the shared intake metrics of `shared.metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_REQUESTS = Counter(
    "sluice_storage_webhook_requests_total", "Webhook requests by HTTP status", ["status"]
)
NOTIFICATIONS = Counter(
    "sluice_storage_notifications_total",
    "Notification bodies received, by source and result (records, invalid, empty, held: "
    "not admitted because a workflow it feeds is at policy.max_waiting)",
    ["source", "result"],
)
SOURCE_ERRORS = Counter(
    "sluice_storage_source_errors_total", "Failed rounds of a source (retried)", ["source"]
)
ADMIT_BATCH_EVENTS = Histogram(
    "sluice_storage_admit_batch_events",
    "Events admitted per intake transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
POLLED_OBJECTS = Counter(
    "sluice_storage_polled_objects_total",
    "Objects seen by bucket polling, by result (new, unchanged, before_trigger)",
    ["result"],
)
