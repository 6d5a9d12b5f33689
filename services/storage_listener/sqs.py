"""The `sqs` source: S3 notifications delivered to an SQS queue, optionally through SNS.

Long-polls each queue with aiobotocore, admits every message of a receive in one intake
transaction and deletes the messages only after it committed (contract 3). A crash in between
makes SQS redeliver them after the visibility timeout, and dedup absorbs the repeat.

Messages that hold no event (`s3:TestEvent`, sent by AWS when notifications are configured) are
deleted without being recorded. Malformed messages are recorded as `invalid` and deleted, so a
poison message never cycles through the queue.

Backpressure (`policy.max_waiting`): a receive with an event for a full workflow is not admitted
and not deleted; SQS makes it visible again after the visibility timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

from services.storage_listener import metrics
from services.storage_listener.admitter import Admitter
from services.storage_listener.events import body_events
from services.storage_listener.formats import TEST_EVENT
from services.storage_listener.health import SourceHealth
from shared.backpressure import HeldBack
from shared.models.events import IncomingEvent

log = structlog.get_logger("sluice.storage_listener.sqs")

MAX_MESSAGES = 10  # the SQS limit per receive and per delete batch
_BACKOFF_MAX_S = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def queue_name(queue_url: str) -> str:
    """The last path segment of a queue URL, for logs and event refs."""
    return urlsplit(queue_url).path.rstrip("/").rpartition("/")[2] or queue_url


class SqsSource:
    """Consumes one queue with one long-polling loop."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        admitter: Admitter,
        health: SourceHealth,
        *,
        wait_s: int = 20,
        visibility_timeout_s: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._name = queue_name(queue_url)
        self._admitter = admitter
        self._health = health
        self._wait_s = wait_s
        self._visibility_timeout_s = visibility_timeout_s
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Receive, admit, delete until `stop`; failures are logged and retried with backoff."""
        backoff = 0.0
        log.info("sqs_source_started", queue=self._name, wait_s=self._wait_s)
        while not stop.is_set():
            try:
                messages = await self._receive(stop)
                if messages is None:
                    break
                if messages:
                    await self._handle(messages)
                self._health.ok(self._clock())
                backoff = 0.0
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.5), _BACKOFF_MAX_S)
                metrics.SOURCE_ERRORS.labels("sqs").inc()
                self._health.failed(f"{type(exc).__name__}: {exc}", self._clock())
                log.error(
                    "sqs_round_failed",
                    queue=self._name,
                    error=str(exc),
                    error_type=type(exc).__name__,
                    retry_in_s=backoff,
                )
                with_stop = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({with_stop}, timeout=backoff)
                finally:
                    with_stop.cancel()
        log.info("sqs_source_stopped", queue=self._name)

    async def _receive(self, stop: asyncio.Event) -> list[dict[str, Any]] | None:
        """One long poll, abandoned when `stop` is set first (None then).

        An abandoned receive may have taken messages the listener never sees; they become
        visible again after the visibility timeout.
        """
        options: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": MAX_MESSAGES,
            "WaitTimeSeconds": self._wait_s,
        }
        if self._visibility_timeout_s is not None:
            options["VisibilityTimeout"] = self._visibility_timeout_s
        receiving = asyncio.ensure_future(self._client.receive_message(**options))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not receiving.done():
                receiving.cancel()
                # Let the request unwind (closing its connection) before going on.
                await asyncio.wait({receiving})
        if receiving.cancelled():
            return None
        response: dict[str, Any] = receiving.result()
        messages: list[dict[str, Any]] = response.get("Messages") or []
        return messages

    async def _handle(self, messages: list[dict[str, Any]]) -> None:
        received_at = self._clock()
        events: list[IncomingEvent] = []
        for message in messages:
            body = message.get("Body") or ""
            origin = f"sqs:{self._name}/{message.get('MessageId', '?')}"
            found = body_events(body, received_at, origin=origin)
            if not found:
                kind = "test_event" if TEST_EVENT in body else "empty"
                log.info("sqs_message_without_event", queue=self._name, kind=kind, ref=origin)
            metrics.NOTIFICATIONS.labels(
                "sqs",
                "invalid" if any(e.error for e in found) else ("records" if found else "empty"),
            ).inc()
            events.extend(found)
        # Deleting only after this returns is what keeps a crash from losing events.
        try:
            await self._admitter.submit(events, hold=True)
        except HeldBack as held:
            # Backpressure: the messages stay in the queue and come back when their visibility
            # timeout ends; by then the workflow may have drained.
            metrics.NOTIFICATIONS.labels("sqs", "held").inc(len(messages))
            log.info(
                "sqs_held_back",
                queue=self._name,
                messages=len(messages),
                trigger=held.hold.trigger,
                reason=held.hold.reason,
            )
            return
        await self._delete(messages)

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), MAX_MESSAGES):
            chunk = messages[start : start + MAX_MESSAGES]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            response = await self._client.delete_message_batch(
                QueueUrl=self._queue_url, Entries=entries
            )
            for failure in response.get("Failed") or []:
                # Admitted already: the redelivery will be recorded as a duplicate.
                log.warning(
                    "sqs_delete_failed",
                    queue=self._name,
                    code=failure.get("Code"),
                    message=failure.get("Message"),
                )
