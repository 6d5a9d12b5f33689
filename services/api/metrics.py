"""Metrics of the HTTP API itself (the domain metrics live in shared/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "sluice_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "sluice_api_request_seconds",
    "Time to answer an HTTP request (streamed logs: until the stream ends)",
    ["method", "route"],
)
