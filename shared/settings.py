"""Configuration from the environment, composed per concern.

Bad configuration fails at start with one line naming the variable (`SettingsError`).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.secret_box import SecretBox, SecretKeyError, parse_keys


class SettingsError(SystemExit):
    """Raised (as a clean exit) when a variable is invalid; the message names it."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore", frozen=True)


class PostgresSettings(_Base):
    database_url: str = Field(
        default="", description="postgresql://user:pass@host:5432/db; empty under `sluice dev`"
    )
    db_pool_min: int = Field(default=1, ge=0, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=500)


class KafkaSettings(_Base):
    kafka_bootstrap: str = ""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_group_id: str = "sluice-kafka-listener"
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=1, le=10_000)
    kafka_max_batch: int = Field(default=500, ge=1, le=100_000)


# The credentials the S3 of `sluice dev` hands out (it accepts any). `sluice upload` falls back
# to them for an endpoint on this machine, so they live here rather than in the dev package.
DEV_S3_ACCESS_KEY: Final = "sluice"
DEV_S3_SECRET_KEY: Final = "sluice-dev-secret"


class S3Settings(_Base):
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    # AWS_* are the standard names every S3 client reads; keep them unprefixed.
    aws_access_key_id: SecretStr | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )


class Settings(PostgresSettings, KafkaSettings, S3Settings):
    """Everything a sluice process reads from the environment."""

    webhook_tokens: str = ""
    sqs_queue_urls: str = ""
    bootstrap_token: SecretStr | None = None
    api_port: int = Field(default=8080, ge=1, le=65535)
    webhook_port: int = Field(default=8081, ge=1, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    host: str = "0.0.0.0"
    executor_concurrency: int = Field(default=16, ge=1, le=10_000)
    executor_id: str | None = None
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    timezone: str = "UTC"
    drain_timeout_s: float = Field(default=30, ge=0, le=3600)
    lease_s: float = Field(default=30, ge=1, le=3600)
    poll_interval_s: float = Field(default=2, gt=0, le=300)
    dedup_retention_days: int = Field(default=30, ge=1, le=3650)
    max_request_bytes: int = Field(default=1 << 20, ge=1024)
    # Event replay: the most records one replay may read (and its default), and how often the
    # listeners look for replay jobs when no NOTIFY wakes them.
    replay_max_events: int = Field(default=10_000, ge=1, le=10_000_000)
    replay_poll_interval_s: float = Field(default=5.0, gt=0, le=300)
    # The unprivileged user node processes run as when the executor runs as root.
    node_user: str | None = None
    # Encrypts connection secrets at rest: one key, or `new,old` while rotating.
    secret_key: SecretStr | None = None

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            try:
                parse_keys(value.get_secret_value())
            except SecretKeyError as exc:
                # The message names the variable already; keep only the reason.
                raise ValueError(str(exc).split(": ", 1)[1]) from None
        return value

    def secret_box(self) -> SecretBox:
        """The connection-secret keys; a missing key exits naming SLUICE_SECRET_KEY."""
        try:
            return SecretBox.from_text(
                self.secret_key.get_secret_value() if self.secret_key else None
            )
        except SecretKeyError as exc:
            raise SettingsError(f"invalid configuration: {exc}") from None

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def webhook_token_list(self) -> list[str]:
        return [t.strip() for t in self.webhook_tokens.split(",") if t.strip()]

    @property
    def sqs_queue_url_list(self) -> list[str]:
        return [u.strip() for u in self.sqs_queue_urls.split(",") if u.strip()]


def _env_name(settings_cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    info = settings_cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return alias
    return f"SLUICE_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; on error exit with one line naming the variable and the reason."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _env_name(Settings, tuple(first["loc"]))
        raise SettingsError(f"invalid configuration: {name}: {first['msg']}") from None
