"""Executor metrics, in addition to the shared ones in shared/metrics.py."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ATTEMPTS_IN_FLIGHT = Gauge(
    "sluice_executor_attempts_in_flight", "Attempts this executor holds the lease of"
)
ATTEMPTS_FENCED = Counter(
    "sluice_executor_attempts_fenced_total",
    "Attempts killed without a final write",
    ["reason"],  # terminated | lost | self_fenced
)
LEASES_SWEPT = Counter(
    "sluice_executor_leases_swept_total", "Expired leases re-queued or failed by the sweeper"
)
WRITES_REJECTED = Counter(
    "sluice_executor_writes_rejected_total",
    "Finishes refused because the attempt no longer held its lease",
)
