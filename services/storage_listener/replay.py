"""Replays of S3 triggers: list the trigger's bucket and re-admit the objects of a time range.

The listing (ListObjectsV2) is narrowed to the literal prefix of the trigger's `key_pattern`, and
an object is replayed when its key matches the pattern and its `LastModified` lies in
[`from`, `to`). Each becomes the `s3:ObjectCreated:Put` event the `poll` source would make of it,
so under `dedup: etag` its key is the one a notification of the same upload had: `missing` admits
exactly the objects no notification admitted. The whole range is listed and counted before
anything is admitted; more objects than the job's `max_events` fail the job without admitting.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import structlog

from services.storage_listener.events import record_event
from services.storage_listener.formats import object_created_message
from shared.db.pool import Executor
from shared.matching import glob_match, literal_prefix
from shared.models.replays import ReplayJob
from shared.models.triggers import S3TriggerSpec
from shared.replays import Feed, ReplayError, replayed_trigger

log = structlog.get_logger("sluice.storage_listener.replay")

BATCH: Final = 500
"""Objects admitted per intake transaction."""


class S3Replayer:
    """The `carry` of S3 replays (see `shared.replays.run_replays`)."""

    def __init__(self, pool: Executor, client: Any, *, page_size: int | None = None) -> None:
        self._pool = pool
        self._client = client
        self._page_size = page_size

    async def __call__(self, job: ReplayJob, feed: Feed) -> None:
        spec = await replayed_trigger(self._pool, job, "s3", S3TriggerSpec)
        start, end = job.range_from, job.range_to
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            raise ReplayError("from: S3 replays take times, not offset maps")
        objects = await self._list(spec, start, end, job.max_events, feed)
        log.info("replay_range", bucket=spec.bucket, objects=len(objects))
        objects.sort(key=lambda item: (item["LastModified"], item["Key"]))
        for i in range(0, len(objects), BATCH):
            received_at = datetime.now(UTC)
            await feed.admit(
                [
                    record_event(
                        object_created_message(
                            spec.bucket,
                            item["Key"],
                            item.get("ETag") or "",
                            int(item.get("Size") or 0),
                            item["LastModified"],
                        ),
                        received_at,
                    )
                    for item in objects[i : i + BATCH]
                ]
            )

    async def _list(
        self, spec: S3TriggerSpec, start: datetime, end: datetime, limit: int, feed: Feed
    ) -> list[dict[str, Any]]:
        """The objects of the range, or ReplayError once they are more than `limit`."""
        found: list[dict[str, Any]] = []
        paginator = self._client.get_paginator("list_objects_v2")
        pages = {"PageSize": self._page_size} if self._page_size else {}
        async for page in paginator.paginate(
            Bucket=spec.bucket, Prefix=literal_prefix(spec.key_pattern), PaginationConfig=pages
        ):
            for item in page.get("Contents") or []:
                if start <= item["LastModified"] < end and glob_match(
                    spec.key_pattern, item["Key"]
                ):
                    found.append(item)
            if len(found) > limit:
                raise ReplayError(
                    f"the range holds more than max_events {limit} objects; narrow from/to"
                )
            await feed.heartbeat()
        return found
