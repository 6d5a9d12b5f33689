"""Executor tuning, built from Settings; tests and benchmarks override single fields."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import Any

from services.executor.fencing import fence_margin_s
from shared.settings import Settings


def default_executor_id() -> str:
    """host-pid-random: unique per process, readable in `attempts.executor`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ExecutorConfig:
    """How one executor process claims, leases, logs and stops.

    `lease_s` is measured on the database clock; renewal runs every `lease_s / 3` and an executor
    that could not renew for `lease_s / 2` kills its own attempts (self-fencing). Should the
    executor itself be paused or dead, each attempt's fence process kills its node
    `fence_after_s` after the last accepted renewal, before the lease can expire, so an attempt
    is never alive when another executor re-runs it (docs/fencing.md).
    """

    executor_id: str
    concurrency: int = 16
    lease_s: float = 30.0
    poll_interval_s: float = 2.0
    drain_timeout_s: float = 30.0
    # Expired leases are looked for this often (default: half a lease).
    sweep_interval_s: float | None = None
    # At most this many nodes per claim statement and instances per admission statement.
    claim_batch: int = 256
    admission_batch: int = 1000
    # SIGTERM to the process group, then SIGKILL after this long.
    kill_grace_s: float = 1.0
    log_flush_s: float = 0.2
    # A finish waits this long for others to share its transaction (throughput under load
    # against a little latency for the successors of a node).
    finish_coalesce_s: float = 0.002
    log_cap_bytes: int = 10 * 1024 * 1024
    log_chunk_bytes: int = 256 * 1024
    # Connections of the executor's own pool (claims, finishes, logs, renewals, sweeps).
    pool_size: int = 8

    @property
    def renew_interval_s(self) -> float:
        return self.lease_s / 3

    @property
    def self_fence_after_s(self) -> float:
        return self.lease_s / 2

    @property
    def fence_after_s(self) -> float:
        """How long after a renewal was sent its node processes' fences kill them unless a
        newer renewal arrives: a margin before the lease can expire, never before self-fencing
        (docs/fencing.md)."""
        return max(self.self_fence_after_s, self.lease_s - fence_margin_s(self.lease_s))

    @property
    def sweep_every_s(self) -> float:
        return self.sweep_interval_s if self.sweep_interval_s is not None else self.lease_s / 2

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ExecutorConfig:
        """The configuration the environment asks for, with explicit overrides on top."""
        base = cls(
            executor_id=settings.executor_id or default_executor_id(),
            concurrency=settings.executor_concurrency,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            drain_timeout_s=settings.drain_timeout_s,
        )
        return replace(base, **overrides)
