"""Settings only the Kafka listener reads, and the Kafka client options.

The connection itself (`SLUICE_KAFKA_BOOTSTRAP`, `SLUICE_KAFKA_SECURITY_PROTOCOL`, SASL, CA file),
the group id, `fetch_max_wait_ms` and the batch size are shared settings (`shared.settings`); the
consumer-group timings, limits and the fault-injection knob live here, also under `SLUICE_KAFKA_*`.
Bad values fail at start with one line naming the variable.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.models.events import MAX_PAYLOAD_BYTES
from shared.settings import KafkaSettings, SettingsError


class ListenerSettings(BaseSettings):
    """`SLUICE_KAFKA_*` settings of `sluice run kafka-listener`."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_KAFKA_", extra="ignore", frozen=True, populate_by_name=True
    )

    session_timeout_ms: int = Field(default=10_000, ge=1000, le=3_600_000)
    heartbeat_interval_ms: int = Field(
        default=3000,
        ge=10,
        le=600_000,
        # The short name is accepted too.
        validation_alias=AliasChoices(
            "SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS", "SLUICE_KAFKA_HEARTBEAT_MS"
        ),
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        le=86_400_000,
        description="the group drops a member that has not fetched for this long",
    )
    metadata_max_age_ms: int = Field(
        default=10_000,
        ge=100,
        le=3_600_000,
        description="how soon a topic created after its trigger is noticed",
    )
    request_timeout_ms: int = Field(default=30_000, ge=1000, le=600_000)
    max_message_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES,
        ge=1,
        le=1 << 30,
        description="larger records (key + value + headers) are recorded invalid, not admitted",
    )
    in_flight_batches: int = Field(
        default=2, ge=1, le=64, description="fetched batches waiting for admission at most"
    )
    resubscribe_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="poll fallback for trigger changes (NOTIFY first)"
    )
    probe_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="broker reachability and lag measurement"
    )
    probe_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="a probe slower than this reports the broker down"
    )
    commit_timeout_s: float = Field(default=10.0, gt=0, le=600)
    admit_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="an admission transaction slower than this is abandoned and retried",
    )
    revoke_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="how long a rebalance waits for the batch being admitted before committing",
    )
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    stall_report_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description=(
            "a member with no partitions while its topics hold messages nobody consumes is "
            "reported stalled (log, metric, /readyz) after this long"
        ),
    )
    stall_rejoin_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="a member stalled this long leaves its group and joins again",
    )
    fault_kill_after_admit: int | None = Field(
        default=None,
        ge=1,
        description=(
            "fault injection for crash tests only: SIGKILL this process right after the Nth "
            "batch's admission commits, before its offsets are committed"
        ),
    )

    @model_validator(mode="after")
    def _check_timings(self) -> ListenerSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                "heartbeat_interval_ms must be below session_timeout_ms "
                f"({self.heartbeat_interval_ms} >= {self.session_timeout_ms})"
            )
        if self.stall_rejoin_s < self.stall_report_s:
            raise ValueError(
                "SLUICE_KAFKA_STALL_REJOIN_S must not be below SLUICE_KAFKA_STALL_REPORT_S "
                f"({self.stall_rejoin_s} < {self.stall_report_s})"
            )
        return self


def load_listener_settings(**overrides: Any) -> ListenerSettings:
    """Read `SLUICE_KAFKA_*`; on error exit with one line naming the variable and the reason."""
    try:
        return ListenerSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "heartbeat_interval_ms"
        raise SettingsError(
            f"invalid configuration: SLUICE_KAFKA_{field.upper()}: {first['msg']}"
        ) from None


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options (bootstrap, TLS, SASL) from `SLUICE_KAFKA_*`.

    The result holds the SASL password: pass it to a client, never to a log line.
    """
    from aiokafka.helpers import create_ssl_context

    if not settings.kafka_bootstrap:
        raise SettingsError("invalid configuration: SLUICE_KAFKA_BOOTSTRAP: must be set")
    options: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()],
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        if settings.kafka_sasl_mechanism is None:
            raise SettingsError(
                "invalid configuration: SLUICE_KAFKA_SASL_MECHANISM: must be set when "
                f"SLUICE_KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}"
            )
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def describe_connection(settings: KafkaSettings) -> dict[str, Any]:
    """What may be logged about the connection: never the password."""
    return {
        "bootstrap": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
    }
