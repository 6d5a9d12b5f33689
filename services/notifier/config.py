"""Notifier settings: `SLUICE_NOTIFY_*` and the console's base URL for instance links."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import SettingsError


class NotifierConfig(BaseSettings):
    """How the notifier claims, retries and sends. Tests override single fields."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_NOTIFY_", extra="ignore", frozen=True, populate_by_name=True
    )

    # Webhook URLs resolving to loopback, link-local or private ranges are refused unless set.
    allow_private: bool = False
    # Links in messages: `<console_url>/instances/<id>`.
    console_url: str = Field(default="http://localhost:8080", validation_alias="SLUICE_CONSOLE_URL")
    max_attempts: int = Field(default=8, ge=1, le=100)
    # Retry n waits backoff_s * 2**(n-1), at most backoff_max_s.
    backoff_s: float = Field(default=5.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=3600.0, gt=0, le=86400)
    # A claimed row is re-delivered by any notifier once its lease expires (crash recovery).
    lease_s: float = Field(default=60.0, ge=1, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    poll_interval_s: float = Field(default=2.0, gt=0, le=300)
    sla_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # Rows claimed and sent concurrently per round.
    batch: int = Field(default=32, ge=1, le=1000)
    log_tail_chars: int = Field(default=2000, ge=0, le=100_000)
    # Sent and dead rows are kept this long (the API shows them), then pruned hourly.
    retention_days: int = Field(default=30, ge=1, le=3650)
    prune_interval_s: float = Field(default=3600.0, gt=0, le=86400)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones."""
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.backoff_max_s))


def load_config(**overrides: Any) -> NotifierConfig:
    """Read the configuration; on error exit with one line naming the variable."""
    try:
        return NotifierConfig(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        name = "SLUICE_CONSOLE_URL" if field == "console_url" else f"SLUICE_NOTIFY_{field.upper()}"
        raise SettingsError(f"invalid configuration: {name}: {first['msg']}") from None
