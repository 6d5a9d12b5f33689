"""`sluice run executor`: admits waiting instances, claims ready nodes, runs their attempts.

One asyncio process runs many attempts at once. Its loops, supervised in one TaskGroup:
- dispatch: admission (waiting -> running) and claims in dispatch order, woken by NOTIFY
  (`sluice_instances`, `sluice_nodes`) with a polling fallback, until `stop`;
- writer: attempt logs and finishes, batched (see writer.py);
- renewal: extends leases every lease/3, kills attempts whose lease was lost, and kills all of
  them when it could not renew for half a lease (self-fencing);
- sweeper: re-queues attempts whose lease expired on any executor (reason `lost`);
- listener: a dedicated LISTEN connection; `sluice_terminate` kills an instance's attempts;
- requests: carries out the terminate and rerun requests the API records (requests.py), woken
  by NOTIFY `sluice_requests` with a polling fallback.

Contracts 4-5 hold in the database, not here: every write of a running attempt is
fenced by its lease token, and limits are decided inside the admission and claim statements.
SIGTERM sets `stop`: claiming stops, running attempts get `drain_timeout_s` to finish, then they
are killed and released (re-queued at once, not charged against retries) to run elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import OrderedDict
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import structlog

from services.executor import metrics as executor_metrics
from services.executor.attempts import RunningAttempt, execute
from services.executor.claims import (
    ClaimedNode,
    claim_nodes_detail,
    load_specs,
    unknown_groups,
)
from services.executor.config import ExecutorConfig
from services.executor.errors import TRANSIENT
from services.executor.fence_spawner import serving_fences
from services.executor.leases import (
    must_self_fence,
    renew_leases_detail,
    slots_in_use,
    sweep_expired,
)
from services.executor.logs import LogBuffer
from services.executor.operations import FinishResult, promote_instances
from services.executor.prepare import AnyNode, WorkflowContext
from services.executor.requests import carry_out
from services.executor.runners.base import RunnerServices
from services.executor.runners.process import run_process
from services.executor.sandbox import NodeUser, make_non_dumpable, node_user, strip_secrets
from services.executor.wake import first_set
from services.executor.writer import Writer
from shared import metrics
from shared.db import connections
from shared.db.channels import (
    INSTANCES_CHANNEL,
    NODES_CHANNEL,
    REQUESTS_CHANNEL,
    TERMINATE_CHANNEL,
)
from shared.db.pool import Pool, connect, create_pool
from shared.models.workflows import WorkflowSpec
from shared.settings import Settings

log = structlog.get_logger("sluice.executor")

_SPEC_CACHE = 512
_BACKOFF_S = 1.0
# A claim that skipped a group another replica was claiming from looks again this soon (a claim
# transaction takes about a millisecond), unless a NOTIFY comes first.
_SKIPPED_RETRY_S = 0.005
_TERMINATED_MEMORY_S = 60.0


class Executor:
    """One executor process: its attempts, its loops, no state another process needs."""

    def __init__(
        self,
        pool: Pool,
        dsn: str,
        config: ExecutorConfig,
        settings: Settings,
        user: NodeUser | None = None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self.config = config
        self._services = RunnerServices(pool, settings, config.kill_grace_s, user)
        self._attempts: dict[int, RunningAttempt] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._specs: OrderedDict[tuple[int, int], dict[str, AnyNode]] = OrderedDict()
        self._contexts: dict[tuple[int, int], WorkflowContext] = {}
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        # Set by NOTIFY `sluice_requests`; the loop also polls, so a missed NOTIFY only delays.
        self._requests_due = asyncio.Event()
        self._admission_due = True
        self._last_renewed = time.monotonic()
        # When terminate NOTIFYs arrived (instance id -> monotonic time): a claim that raced one
        # is stopped as soon as it starts instead of at the next lease renewal.
        self._terminated: dict[int, float] = {}
        self._writer = Writer(
            pool, config, on_result=self._on_result, on_fenced=lambda a: a.stop("lost")
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop`, then drain, release what is left, and return."""
        with serving_fences():
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen(), name="executor-listen")
                group.create_task(self._writer.run(self._closing), name="executor-writer")
                group.create_task(self._renew_loop(), name="executor-renew")
                group.create_task(self._sweep_loop(), name="executor-sweep")
                group.create_task(self._requests_loop(), name="executor-requests")
                await self._dispatch(stop)
                await self._drain()
                self._closing.set()
        finally:
            await self._kill_all()

    # -- dispatch -------------------------------------------------------------------------

    async def _dispatch(self, stop: asyncio.Event) -> None:
        config = self.config
        while not stop.is_set():
            self._wake.clear()
            skipped = False
            try:
                progressed = await self._admit() if self._admission_due else False
                free = config.concurrency - len(self._attempts)
                if free > 0:
                    want = min(free, config.claim_batch)
                    claimed, skipped = await self._claim(want)
                    progressed = progressed or len(claimed) == want
            except TRANSIENT as exc:
                log.warning("dispatch_failed", error=str(exc))
                await first_set(stop, wait_s=_BACKOFF_S)
                continue
            if progressed:
                continue
            # A group skipped while another replica claimed from it may still hold ready nodes
            # that replica left: look again as soon as its claim is likely done.
            wait_s = _SKIPPED_RETRY_S if skipped else config.poll_interval_s
            await first_set(stop, self._wake, wait_s=wait_s)
            if skipped:
                continue
            if not self._wake.is_set():
                # Polling fallback: a missed NOTIFY or a retry whose delay has passed.
                self._admission_due = True

    async def _admit(self) -> bool:
        async with self._pool.acquire() as conn:
            promoted = await promote_instances(conn, self.config.admission_batch)
        # Another pass may find more (a full batch, or places freed by backfill ordering).
        self._admission_due = bool(promoted)
        if promoted:
            log.debug("instances_promoted", count=len(promoted))
        return bool(promoted)

    async def _claim(self, want: int) -> tuple[list[ClaimedNode], bool]:
        config = self.config
        sent = time.monotonic()
        async with self._pool.acquire() as conn:
            claimed, skipped = await claim_nodes_detail(
                conn,
                config.executor_id,
                lease_s=config.lease_s,
                free=want,
                concurrency=config.concurrency,
                batch=config.claim_batch,
            )
            missing = list({(c.workflow_id, c.version) for c in claimed} - set(self._specs.keys()))
            if missing:
                for key, spec in (await load_specs(conn, missing)).items():
                    self._remember(key, spec)
        for c in claimed:
            self._start(c, sent)
        return claimed, skipped

    def _remember(self, key: tuple[int, int], raw: dict[str, Any]) -> None:
        spec = WorkflowSpec.model_validate(raw)
        self._specs[key] = {n.name: n for n in spec.nodes}
        self._contexts[key] = WorkflowContext(parameters=dict(spec.parameters), timezone=spec.zone)
        while len(self._specs) > _SPEC_CACHE:
            evicted, _ = self._specs.popitem(last=False)
            self._contexts.pop(evicted, None)

    def _start(self, claimed: ClaimedNode, sent: float) -> None:
        key = (claimed.workflow_id, claimed.version)
        nodes = self._specs.get(key, {})
        if key in self._specs:
            self._specs.move_to_end(key)
        att = RunningAttempt(
            claimed,
            nodes.get(claimed.name),
            LogBuffer(self.config.log_cap_bytes, self.config.log_chunk_bytes),
            self._contexts.get(key),
            fence_deadline=sent + self.config.fence_after_s,
        )
        att.claimed_mono = sent
        # A claim sent before a terminate NOTIFY arrived may have raced it; a later one is a
        # claim of the instance after a rerun and must run.
        if self._terminated.get(claimed.instance_id, float("-inf")) > sent:
            att.stop("terminated")
        self._attempts[claimed.node_id] = att
        self._writer.register(att)
        executor_metrics.ATTEMPTS_IN_FLIGHT.set(len(self._attempts))
        if claimed.ready_at is not None:
            wait = (claimed.claimed_at - claimed.ready_at).total_seconds()
            metrics.NODE_QUEUE_WAIT.observe(max(wait, 0.0))
        if claimed.event_received_at is not None and claimed.is_root and claimed.attempt == 1:
            delay = (claimed.claimed_at - claimed.event_received_at).total_seconds()
            metrics.EVENT_TO_NODE_START.observe(max(delay, 0.0))
        task = asyncio.create_task(self._supervise(att), name=f"attempt-{claimed.attempt_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, att: RunningAttempt) -> None:
        c = att.claimed
        with structlog.contextvars.bound_contextvars(
            instance_id=c.instance_id, workflow=c.workflow, node=c.name, attempt=c.attempt
        ):
            log.debug("node_claimed", executor=self.config.executor_id)
            try:
                finish = await execute(att, self._services)
                if finish is not None and not await self._writer.finish(finish):
                    executor_metrics.WRITES_REJECTED.inc()
                    log.warning("node_finish_rejected", reason="lease no longer held")
            finally:
                self._writer.unregister(att)
                self._attempts.pop(c.node_id, None)
                executor_metrics.ATTEMPTS_IN_FLIGHT.set(len(self._attempts))
                self._wake.set()

    def _on_result(self, result: FinishResult) -> None:
        if result.admission_due:
            self._admission_due = True
        if result.retry_at:
            loop = asyncio.get_running_loop()
            now = datetime.now(UTC)
            for when in set(result.retry_at.values()):
                loop.call_later(max((when - now).total_seconds(), 0.0) + 0.005, self._wake.set)
        if result.accepted or result.completed:
            self._wake.set()

    # -- shutdown -------------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info(
            "executor_draining", attempts=len(self._tasks), timeout_s=self.config.drain_timeout_s
        )
        await asyncio.wait(set(self._tasks), timeout=self.config.drain_timeout_s)
        if self._tasks:
            log.warning("executor_releasing", attempts=len(self._tasks))
            for att in list(self._attempts.values()):
                att.stop("released")
            await asyncio.wait(set(self._tasks))

    async def _kill_all(self) -> None:
        """Nothing this process started may outlive it: cancel attempts (their process groups
        are killed on cancellation) and wait for them."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.kill_grace_s + 5)

    # -- leases ---------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        config = self.config
        while not self._closing.is_set():
            held = {
                node_id: att.claimed.lease_token
                for node_id, att in self._attempts.items()
                if not att.fenced
            }
            sent = time.monotonic()
            # Never wait on a hung renewal past the moment self-fencing is due.
            deadline = self._last_renewed + config.self_fence_after_s - sent
            try:
                if held:
                    async with asyncio.timeout(min(config.renew_interval_s, max(deadline, 0.05))):
                        async with self._pool.acquire() as conn:
                            still, renewed = await renew_leases_detail(conn, held, config.lease_s)
                else:
                    still, renewed = set(), set()
            except TRANSIENT as exc:
                log.warning("lease_renewal_failed", error=str(exc) or type(exc).__name__)
                self._self_fence()
                await first_set(self._closing, wait_s=min(1.0, config.renew_interval_s))
                continue
            self._last_renewed = sent
            for node_id in renewed:
                att = self._attempts.get(node_id)
                if att is not None:
                    att.fence.extend(sent + config.fence_after_s)
            for node_id in held.keys() - still:
                att = self._attempts.get(node_id)
                if att is not None:
                    log.warning("lease_lost", node_id=node_id, attempt_id=att.claimed.attempt_id)
                    att.stop("lost")
            await first_set(self._closing, wait_s=config.renew_interval_s)

    def _self_fence(self) -> None:
        now = time.monotonic()
        for att in self._attempts.values():
            since = max(self._last_renewed, att.claimed_mono)
            if not att.fenced and must_self_fence(since, now, self.config.lease_s):
                log.error("self_fenced", attempt_id=att.claimed.attempt_id)
                att.stop("self_fenced")

    async def _sweep_loop(self) -> None:
        while not self._closing.is_set():
            try:
                async with self._pool.acquire() as conn:
                    result = await sweep_expired(conn)
                    in_use = await slots_in_use(conn)
                    missing_groups = await unknown_groups(conn)
            except TRANSIENT as exc:
                log.warning("sweep_failed", error=str(exc))
            else:
                for group, n in in_use.items():
                    metrics.SLOTS_IN_USE.labels(group).set(n)
                for group in missing_groups:
                    log.warning("resource_group_missing", group=group)
                if result.accepted:
                    executor_metrics.LEASES_SWEPT.inc(len(result.accepted))
                    log.warning(
                        "leases_swept",
                        count=len(result.accepted),
                        attempt_ids=sorted(result.accepted)[:20],
                    )
                    self._on_result(result)
            await first_set(self._closing, wait_s=self.config.sweep_every_s)

    async def _requests_loop(self) -> None:
        # Runs until closing, not until stop: a terminate asked for while attempts drain must
        # still kill them.
        while not self._closing.is_set():
            self._requests_due.clear()
            try:
                async with self._pool.acquire() as conn:
                    await carry_out(conn)
            except TRANSIENT as exc:
                log.warning("requests_failed", error=str(exc))
                await first_set(self._closing, wait_s=_BACKOFF_S)
                continue
            await first_set(self._closing, self._requests_due, wait_s=self.config.poll_interval_s)

    # -- notifications --------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        if channel == TERMINATE_CHANNEL:
            try:
                instance_id = int(str(payload))
            except ValueError:
                return
            now = time.monotonic()
            self._terminated[instance_id] = now
            for old in [i for i, t in self._terminated.items() if now - t > _TERMINATED_MEMORY_S]:
                del self._terminated[old]
            for att in list(self._attempts.values()):
                if att.claimed.instance_id == instance_id:
                    att.stop("terminated")
            return
        if channel == REQUESTS_CHANNEL:
            self._requests_due.set()
            return
        if channel == INSTANCES_CHANNEL:
            self._admission_due = True
        self._wake.set()

    async def _listen(self) -> None:
        while not self._closing.is_set():
            try:
                conn = await connect(self._dsn, application_name="sluice-executor-listen")
            except TRANSIENT as exc:
                log.warning("listen_connect_failed", error=str(exc))
                await first_set(self._closing, wait_s=_BACKOFF_S)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                for channel in (
                    INSTANCES_CHANNEL,
                    NODES_CHANNEL,
                    TERMINATE_CHANNEL,
                    REQUESTS_CHANNEL,
                ):
                    await conn.add_listener(channel, self._on_notify)
                # Whatever was announced while not listening is picked up now.
                self._admission_due = True
                self._wake.set()
                self._requests_due.set()
                await first_set(self._closing, lost)
            except TRANSIENT as exc:
                log.warning("listen_failed", error=str(exc))
            finally:
                with contextlib.suppress(*TRANSIENT):
                    await asyncio.wait_for(conn.close(), 5)


def use_pidfd_child_watcher() -> None:
    """Python 3.11's default child watcher waits on a thread per process; pidfd is ~30 % faster
    at spawning (3.12+ uses pidfd by default)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    if isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher):
        return
    try:
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())
    except OSError:
        pass


async def check_node_user(user: NodeUser | None) -> None:
    """Say at start, naming the path, when python nodes cannot run as the node user: the
    interpreter may live where only root can read (a virtualenv under /root)."""
    if user is None:
        if os.geteuid() == 0:
            log.warning(
                "nodes_run_as_root",
                hint="set SLUICE_NODE_USER to the unprivileged user node processes run as",
            )
        return
    buffer = LogBuffer(64 * 1024)
    code = await run_process(
        [sys.executable, "-I", "-c", "pass"],
        env={"PATH": os.environ.get("PATH", os.defpath)},
        cwd="/",
        log=buffer,
        grace_s=1.0,
        user=user.ids,
    )
    if code != 0:
        buffer.close()
        output = "".join(text for _, text in buffer.take()).strip()
        log.error("python_nodes_cannot_run", node_user=user.name, reason=output[-500:])


async def run_executor(settings: Settings, config: ExecutorConfig, stop: asyncio.Event) -> None:
    """Run one executor with an explicit configuration (tests and benchmarks tune it)."""
    use_pidfd_child_watcher()
    user = node_user(settings.node_user)
    await check_node_user(user)
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database_url,
            min_size=1,
            max_size=config.pool_size,
            application_name="sluice-executor",
        )
        stack.push_async_callback(pool.close)
        # Fails here, naming SLUICE_SECRET_KEY, when the key cannot open the stored secrets.
        await connections.open_secrets(pool, settings)
        executor = Executor(pool, settings.database_url, config, settings, user)
        log.info(
            "executor_started",
            executor_id=config.executor_id,
            concurrency=config.concurrency,
            lease_s=config.lease_s,
            node_user=user.name if user else None,
        )
        await executor.run(stop)
        log.info("executor_stopped", executor_id=config.executor_id)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Service entry point (`sluice run executor`, `sluice dev`)."""
    # Nodes of the same uid must not read this process's environment or memory, and nothing
    # started from here inherits a credential (the settings hold what the services need).
    make_non_dumpable()
    strip_secrets()
    await run_executor(settings, ExecutorConfig.from_settings(settings), stop)
