"""Scheduler metrics, in addition to the shared ones in shared/metrics.py."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SCHEDULE_FIRES = Counter(
    "sluice_schedule_fires_total",
    "Fire times accounted for by the scheduler",
    ["outcome"],  # fired | duplicate | misfire_dropped | frozen
)
SCHEDULE_DELAY = Histogram(
    "sluice_schedule_fire_delay_seconds",
    "From a fire time to the creation of its instance",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
)
