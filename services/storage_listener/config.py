"""Settings of the storage listener's `poll` and `kafka` sources.

The webhook (`SLUICE_WEBHOOK_TOKENS`, `SLUICE_WEBHOOK_PORT`) and the SQS source
(`SLUICE_SQS_QUEUE_URLS`) are configured in `shared.settings`; what only this service reads lives
here, under `SLUICE_STORAGE_*`. Bad values fail at start with one line naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import SettingsError

_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


@dataclass(frozen=True)
class PollTarget:
    """One `bucket/prefix` to list; an empty prefix lists the whole bucket."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.bucket}/{self.prefix}"


def parse_poll_targets(value: str) -> list[PollTarget]:
    """Parse `bucket[/prefix]` entries separated by commas; repeated entries are kept once.

    An `s3://` scheme is tolerated. The prefix is used verbatim (`data/in` also lists
    `data/inbox/...`, as ListObjectsV2 prefixes do).
    """
    targets: list[PollTarget] = []
    for entry in value.split(","):
        entry = entry.strip().removeprefix("s3://")
        if not entry:
            continue
        bucket, _, prefix = entry.partition("/")
        if not 3 <= len(bucket) <= 63 or not set(bucket) <= _BUCKET_CHARS:
            raise ValueError(f"{entry!r} does not start with a valid bucket name")
        target = PollTarget(bucket, prefix)
        if target not in targets:
            targets.append(target)
    return targets


class StorageSettings(BaseSettings):
    """`SLUICE_STORAGE_*`: bucket polling and S3 events published to Kafka."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_STORAGE_", extra="ignore", frozen=True)

    poll: str = Field(default="", description="comma-separated bucket[/prefix] entries to list")
    poll_interval_s: float = Field(default=30, gt=0, le=86_400)
    kafka_topics: str = Field(default="", description="comma-separated topics of S3 event records")
    kafka_group_id: str = Field(default="sluice-storage-listener", min_length=1)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000, le=3_600_000)
    kafka_heartbeat_interval_ms: int = Field(default=3000, ge=10, le=600_000)
    sqs_wait_s: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait (max 20)")
    sqs_visibility_timeout_s: int | None = Field(default=None, ge=0, le=43_200)

    @field_validator("poll")
    @classmethod
    def _check_poll(cls, value: str) -> str:
        parse_poll_targets(value)
        return value

    @property
    def poll_targets(self) -> list[PollTarget]:
        return parse_poll_targets(self.poll)

    @property
    def kafka_topic_list(self) -> list[str]:
        topics: list[str] = []
        for topic in self.kafka_topics.split(","):
            topic = topic.strip()
            if topic and topic not in topics:
                topics.append(topic)
        return topics


def load_storage_settings(**overrides: Any) -> StorageSettings:
    """Read `SLUICE_STORAGE_*`; on error exit with one line naming the variable and the reason."""
    try:
        return StorageSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(
            f"invalid configuration: SLUICE_STORAGE_{field.upper()}: {first['msg']}"
        ) from None
