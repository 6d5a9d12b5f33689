"""Batched writes of running attempts: log chunks every `log_flush_s`, finishes as they come.

Everything pending goes out in one transaction per flush (`finish_attempts`), so under load many
attempts share a round trip and when idle a finish is written at once. An attempt's last log
chunks travel in the same transaction as its finish: a reader who sees the attempt ended sees
its whole log. A chunk the database refuses means the attempt lost its lease (`on_fenced`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from services.executor.attempts import RunningAttempt
from services.executor.config import ExecutorConfig
from services.executor.errors import TRANSIENT
from services.executor.logs import LogChunk
from services.executor.operations import Finish, FinishResult, finish_attempts
from services.executor.wake import first_set
from shared.db.pool import Pool

log = structlog.get_logger("sluice.executor")
_RETRY_S = 0.5
# Once the executor is closing, pending writes are retried this long and then abandoned (the
# sweeper of another executor settles those attempts when their leases expire).
_CLOSING_PATIENCE_S = 10.0


class Writer:
    """Ships the logs and finishes of this executor's attempts."""

    def __init__(
        self,
        pool: Pool,
        config: ExecutorConfig,
        *,
        on_result: Callable[[FinishResult], None],
        on_fenced: Callable[[RunningAttempt], None],
    ) -> None:
        self._pool = pool
        self._config = config
        self._on_result = on_result
        self._on_fenced = on_fenced
        self._live: dict[int, RunningAttempt] = {}
        self._finishes: list[tuple[Finish, asyncio.Future[bool]]] = []
        self._chunks: list[LogChunk] = []
        self._wake = asyncio.Event()

    def register(self, att: RunningAttempt) -> None:
        self._live[att.claimed.attempt_id] = att

    def unregister(self, att: RunningAttempt) -> None:
        self._live.pop(att.claimed.attempt_id, None)

    async def finish(self, finish: Finish) -> bool:
        """Queue a finish; return whether the database accepted it (the lease still held)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finishes.append((finish, future))
        self._wake.set()
        return await future

    async def run(self, closing: asyncio.Event) -> None:
        """Flush until `closing` is set and nothing is left to write."""
        give_up_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if closing.is_set():
                give_up_at = give_up_at or loop.time() + _CLOSING_PATIENCE_S
                if not self._finishes:
                    await self._flush()
                    return
                if loop.time() > give_up_at:
                    self._abandon()
                    return
            await first_set(self._wake, closing, wait_s=self._config.log_flush_s)
            if self._wake.is_set() and self._config.finish_coalesce_s > 0:
                # Let finishes that end at nearly the same time share one transaction.
                await asyncio.sleep(self._config.finish_coalesce_s)
            self._wake.clear()
            await self._flush()

    def _abandon(self) -> None:
        log.error("attempt_writes_abandoned", finishes=len(self._finishes))
        for _, future in self._finishes:
            if not future.done():
                future.set_result(False)
        self._finishes = []

    async def _flush(self) -> None:
        batch, self._finishes = self._finishes, []
        for att in self._live.values():
            c = att.claimed
            self._chunks.extend(
                LogChunk(c.attempt_id, c.node_id, c.lease_token, seq, data)
                for seq, data in att.log.take()
            )
        if not batch and not self._chunks:
            return
        chunks = self._chunks
        try:
            async with self._pool.acquire() as conn:
                result = await finish_attempts(conn, [f for f, _ in batch], chunks)
        except TRANSIENT as exc:
            log.warning("attempt_write_failed", error=str(exc), finishes=len(batch))
            self._finishes = batch + self._finishes
            await asyncio.sleep(_RETRY_S)
            self._wake.set()
            return
        self._chunks = []
        for finish, future in batch:
            if not future.done():
                future.set_result(finish.attempt_id in result.accepted)
        finishing = {f.attempt_id for f, _ in batch}
        for attempt_id in {c.attempt_id for c in chunks} - result.logged - finishing:
            fenced = self._live.get(attempt_id)
            if fenced is not None:
                self._on_fenced(fenced)
        self._on_result(result)
