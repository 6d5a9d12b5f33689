"""Notifier metrics: deliveries by outcome and event-to-delivery latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENT = Counter("sluice_notifications_sent_total", "Notifications delivered", ["channel"])
RETRIED = Counter(
    "sluice_notifications_retried_total", "Failed deliveries scheduled again", ["channel"]
)
DEAD = Counter(
    "sluice_notifications_dead_total", "Notifications given up after the last try", ["channel"]
)
DELIVERY_LATENCY = Histogram(
    "sluice_notification_delivery_seconds",
    "From the state change (outbox row written) to delivery",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
