"""`sluice run notifier`: delivers the notification outbox.

Loops, supervised in one TaskGroup:
- deliver: claims due rows (SKIP LOCKED, under a lease), sends each through its channel and
  marks it `sent`, or schedules a retry with exponential backoff, or marks it `dead` after the
  last try (or at once when trying again cannot help). Woken by NOTIFY `sluice_notifications`,
  with a polling fallback.
- sla: raises `sla_miss` for instances unfinished past `policy.sla_s` (once each).
- listen: the dedicated LISTEN connection.

Delivery is at least once: a notifier killed between sending and marking loses its lease and
another one sends the message again with the same id (`Idempotency-Key`, Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import structlog
from pydantic import ValidationError

from services.notifier import metrics
from services.notifier.channels import dingtalk, email, feishu, slack, webhook, wecom
from services.notifier.channels.base import Delivery, DeliveryError, HttpSender, PermanentError
from services.notifier.config import NotifierConfig, load_config
from services.notifier.outbox import (
    Claimed,
    claim,
    mark_failed,
    mark_sent,
    message_facts,
    next_due_s,
    prune,
    workspace_name,
)
from services.notifier.templates import MessageContext, render
from shared.db import connections as connection_repo
from shared.db.errors import TRANSIENT, NotFound
from shared.db.notifications import CHANNEL, enqueue_sla_misses
from shared.db.pool import connect, create_pool
from shared.lifecycle import wait_any
from shared.models.notifications import NotifyRule
from shared.secret_box import SecretBox
from shared.settings import Settings

log = structlog.get_logger("sluice.notifier")
_TRANSIENT = TRANSIENT
_RELISTEN_S = 1.0
EVENT_STATES = {
    "start": "running",
    "success": "succeeded",
    "failure": "failed",
    "timeout": "timed out",
    "retry": "retrying",
    "terminated": "terminated",
    "sla_miss": "running past its SLA",
}


class Notifier:
    def __init__(
        self, pool: asyncpg.Pool[Any], config: NotifierConfig, http: HttpSender, box: SecretBox
    ) -> None:
        self.pool = pool
        self.box = box
        self.config = config
        self.http = http
        self.senders: dict[str, Callable[[Delivery], Awaitable[None]]] = {
            "webhook": lambda d: webhook.send(d, http),
            "slack": lambda d: slack.send(d, http),
            "dingtalk": lambda d: dingtalk.send(d, http),
            "feishu": lambda d: feishu.send(d, http),
            "wecom": lambda d: wecom.send(d, http),
            "email": lambda d: email.send(d, config.timeout_s),
        }

    # -- building a message ---------------------------------------------------------------

    async def context(self, row: Claimed) -> MessageContext:
        base: dict[str, Any] = {
            "message_id": row.message_id,
            "event": row.event,
            "created_at": row.created_at,
        }
        if row.instance_id is None:
            name = await workspace_name(self.pool, row.workspace_id)
            return MessageContext(
                workspace=name, reason="sent by POST .../notifications/test", **base
            )
        attempt = row.detail.get("attempt") if row.node is not None else None
        found = await message_facts(
            self.pool, row.instance_id, row.node, attempt, row.event == "failure"
        )
        if found is None:
            raise PermanentError(f"instance {row.instance_id} no longer exists")
        now = datetime.now(UTC)
        if row.node is not None:
            reason = row.detail.get("reason") or found.attempt_reason
            start, end = found.attempt_started_at, found.attempt_finished_at
        else:
            reason = found.reason
            if found.node and found.attempt_reason is not None:
                reason = f"node {found.node} failed ({found.attempt_reason})"
            start = found.started_at or found.instance_created_at
            end = found.finished_at
            if row.event == "sla_miss":
                start = found.instance_created_at
        # The state the event reports, not what the row says by the time this is sent (a retry
        # may already be running): a repeated message says the same thing.
        state = EVENT_STATES.get(row.event, found.state)
        if row.event == "start":
            duration = None
        else:
            duration = ((end or now) - start).total_seconds() if start else None
        tail = found.log_tail
        if tail and len(tail) > self.config.log_tail_chars:
            tail = tail[-self.config.log_tail_chars :]
        return MessageContext(
            workspace=found.workspace,
            workflow=found.workflow,
            version=found.version,
            instance_id=row.instance_id,
            node=found.node,
            state=state,
            reason=reason,
            attempt=found.attempt,
            exit_code=found.exit_code,
            duration_s=None if duration is None else round(duration, 3),
            url=f"{self.config.console_url.rstrip('/')}/instances/{row.instance_id}",
            log_tail=tail or None,
            bizdate=found.bizdate,
            cyctime=found.cyctime,
            # Run-time overrides, then what the node resolved and ran with (secrets redacted).
            parameters={**(found.parameters or {}), **(found.attempt_parameters or {})},
            **base,
        )

    async def delivery(self, row: Claimed) -> Delivery:
        try:
            rule = NotifyRule.model_validate(row.rule)
        except ValidationError as exc:
            raise PermanentError(f"rule: {exc.errors()[0]['msg']}") from None
        ctx = await self.context(row)
        secret: str | None = None
        smtp = None
        try:
            if rule.secret is not None:
                resolved = await connection_repo.resolve(
                    self.pool, row.workspace_id, rule.secret, self.box
                )
                secret = resolved.secrets.get("key")
                if resolved.kind != "secret" or not secret:
                    raise PermanentError(
                        f"secret: connection {rule.secret!r} must be of kind secret with "
                        "secrets.key"
                    )
            if rule.connection is not None:
                smtp = await connection_repo.resolve(
                    self.pool, row.workspace_id, rule.connection, self.box
                )
                if smtp.kind != "smtp":
                    raise PermanentError(
                        f"connection: {rule.connection!r} is of kind {smtp.kind}, not smtp"
                    )
        except NotFound as exc:
            raise PermanentError(str(exc)) from None
        return Delivery(
            ctx=ctx, rule=rule, text=render(ctx, rule.template), secret=secret, smtp=smtp
        )

    # -- delivering -----------------------------------------------------------------------

    async def deliver(self, row: Claimed) -> None:
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            notification_id=row.id, message_id=row.message_id, channel=row.channel, event=row.event
        ):
            try:
                delivery = await self.delivery(row)
                await asyncio.wait_for(
                    self.senders[row.channel](delivery), self.config.timeout_s * 2
                )
            except (DeliveryError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
                permanent = isinstance(exc, PermanentError)
                await self._failed(row, error, permanent)
                return
            except Exception as exc:
                # An unexpected error is retried like a receiver failure, never lost.
                await self._failed(row, f"{type(exc).__name__}: {exc}", False)
                return
            latency = await mark_sent(self.pool, row)
            if latency is None:
                log.warning("notification_lease_lost", attempts=row.attempts)
                return
            metrics.SENT.labels(row.channel).inc()
            metrics.DELIVERY_LATENCY.labels(row.channel).observe(latency)
            log.info(
                "notification_sent",
                attempts=row.attempts,
                latency_s=round(latency, 4),
                send_s=round(time.monotonic() - started, 4),
            )

    async def _failed(self, row: Claimed, error: str, permanent: bool) -> None:
        retry_in = self.config.backoff(row.attempts)
        state = await mark_failed(
            self.pool,
            row,
            error,
            retry_in_s=retry_in,
            give_up=permanent,
            max_attempts=self.config.max_attempts,
        )
        if state == "dead":
            metrics.DEAD.labels(row.channel).inc()
            log.warning("notification_dead", attempts=row.attempts, error=error)
        elif state == "pending":
            metrics.RETRIED.labels(row.channel).inc()
            log.info("notification_retry", attempts=row.attempts, retry_in_s=retry_in, error=error)

    async def _deliver_guarded(self, row: Claimed) -> None:
        try:
            await self.deliver(row)
        except _TRANSIENT as exc:
            # The outcome could not be written: the lease expires and the row is sent again.
            log.warning("notifier_db_error", notification_id=row.id, error=str(exc))

    async def serve(self, stop: asyncio.Event, notified: asyncio.Event) -> None:
        """Keep up to `batch` deliveries in flight: a slow receiver holds one slot, never the
        others. Claims happen whenever a slot is free and rows are due."""
        in_flight: set[asyncio.Task[None]] = set()
        freed = asyncio.Event()

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            freed.set()

        while not stop.is_set():
            free = self.config.batch - len(in_flight)
            due: float | None = None
            try:
                rows = (
                    await claim(self.pool, lease_s=self.config.lease_s, batch=free) if free else []
                )
                for row in rows:
                    task = asyncio.create_task(self._deliver_guarded(row))
                    in_flight.add(task)
                    task.add_done_callback(done)
                if rows and len(rows) < free:
                    continue  # more may have become due meanwhile
                if not rows and free:
                    due = await next_due_s(self.pool)
            except _TRANSIENT as exc:
                log.warning("notifier_db_error", error=str(exc))
            wait = self.config.poll_interval_s if due is None else max(due, 0.01)
            if free == 0 or (rows and len(rows) == free):
                # Full: wait for a slot (or stop); NOTIFYs meanwhile are picked up by the claim.
                await wait_any(stop, freed, self.config.poll_interval_s)
            else:
                await wait_any(stop, notified, min(wait, self.config.poll_interval_s))
        if in_flight:
            # Let started sends finish (bounded); what is cut off is re-sent after its lease.
            _, cut = await asyncio.wait(set(in_flight), timeout=self.config.timeout_s * 2)
            for task in cut:
                task.cancel()
            if cut:
                await asyncio.wait(cut)

    async def watch_sla(self, stop: asyncio.Event) -> None:
        """Raise SLA misses every `sla_interval_s`; prune old rows every `prune_interval_s`."""
        next_prune = 0.0
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    raised = await enqueue_sla_misses(conn)
                if raised:
                    log.info("sla_miss_raised", count=raised)
                if time.monotonic() >= next_prune:
                    pruned = await prune(self.pool, retention_days=self.config.retention_days)
                    next_prune = time.monotonic() + self.config.prune_interval_s
                    if pruned:
                        log.info("notifications_pruned", count=pruned)
            except _TRANSIENT as exc:
                log.warning("notifier_sla_error", error=str(exc))
            await wait_any(stop, None, self.config.sla_interval_s)


async def _listen(dsn: str, notified: asyncio.Event, stop: asyncio.Event) -> None:
    """LISTEN on a dedicated connection; reconnect when it drops (polling covers the gap)."""

    def wake(*_: object) -> None:
        notified.set()

    lost = asyncio.Event()
    while not stop.is_set():
        lost.clear()
        try:
            conn = await connect(dsn, "sluice-notifier-listen")
        except _TRANSIENT as exc:
            log.warning("notifier_listen_failed", error=str(exc))
            await wait_any(stop, None, _RELISTEN_S)
            continue
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(CHANNEL, wake)
            notified.set()
            while not stop.is_set() and not conn.is_closed():
                await wait_any(stop, lost, 5.0)
        finally:
            if not conn.is_closed():
                with contextlib.suppress(*_TRANSIENT):
                    await conn.close()
        if not stop.is_set():
            await wait_any(stop, None, _RELISTEN_S)


async def run_notifier(settings: Settings, config: NotifierConfig, stop: asyncio.Event) -> None:
    """Run one notifier with an explicit configuration (tests and benchmarks tune it)."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database_url, min_size=1, max_size=4, application_name="sluice-notifier"
        )
        stack.push_async_callback(pool.close)
        # Fails here, naming SLUICE_SECRET_KEY, when the key cannot open the stored secrets.
        box = await connection_repo.open_secrets(pool, settings)
        # trust_env=False: a proxy from the environment would bypass the address pinning.
        # No keep-alive: pooled connections are keyed by the pinned address, and one opened
        # (and certificate-checked) for one host name must never carry another host's request.
        client = httpx.AsyncClient(
            timeout=config.timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        stack.push_async_callback(client.aclose)
        notifier = Notifier(
            pool, config, HttpSender(client, allow_private=config.allow_private), box
        )
        notified = asyncio.Event()
        log.info(
            "notifier_started",
            allow_private=config.allow_private,
            max_attempts=config.max_attempts,
            lease_s=config.lease_s,
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(_listen(settings.database_url, notified, stop))
            group.create_task(notifier.watch_sla(stop))
            group.create_task(notifier.serve(stop, notified))
        log.info("notifier_stopped")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Service entry point (`sluice run notifier`, `sluice dev`)."""
    await run_notifier(settings, load_config(), stop)
