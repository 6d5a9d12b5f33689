"""What each source of the storage listener is doing, for `/readyz` and the logs.

The webhook port's `/readyz` shows every source in detail. Each state change is also reported to
the process-wide `shared.probes.READINESS` (as `storage-<source>`), so the probes every `sluice run`
process serves on `SLUICE_METRICS_PORT` tell the same story. A source that fails is reported
not-ready until its next successful round; a webhook without tokens is ready (other sources may
be all a deployment uses) with a detail that says every request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.probes import Readiness


@dataclass
class SourceHealth:
    """The state of one source: its configuration summary and the outcome of its last round."""

    name: str
    detail: str
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    readiness: Readiness | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Source-specific state worth showing (e.g. the Kafka partitions this member reads)."""

    def __post_init__(self) -> None:
        self._report(True, self.detail)

    def ok(self, now: datetime) -> None:
        if self.last_error is not None or self.last_ok_at is None:
            self._report(True, self.detail)
        self.last_ok_at = now
        self.last_error = None

    def failed(self, error: str, now: datetime) -> None:
        if self.last_error != error:
            self._report(False, error)
        self.last_error = error
        self.last_error_at = now

    def as_dict(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            **self.info,
        }

    def _report(self, ok: bool, detail: str) -> None:
        if self.readiness is not None:
            self.readiness.set(f"storage-{self.name}", ok, detail)


@dataclass
class Health:
    """Every source of one listener process, by name."""

    readiness: Readiness | None = None
    sources: dict[str, SourceHealth] = field(default_factory=dict)

    def add(self, name: str, detail: str) -> SourceHealth:
        state = SourceHealth(name, detail, readiness=self.readiness)
        self.sources[name] = state
        return state

    def as_dict(self) -> dict[str, Any]:
        return {name: state.as_dict() for name, state in sorted(self.sources.items())}
