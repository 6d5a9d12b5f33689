"""Running one claimed attempt: prepare, run, stop on timeout / terminate / lost lease, report.

`execute` never raises for node failures: it returns the `Finish` to write, or None when the
attempt was fenced off (terminated, lease lost, self-fenced) and must write nothing more.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Literal

import structlog

from services.executor import metrics as executor_metrics
from services.executor.claims import ClaimedNode
from services.executor.fencing import FenceLink
from services.executor.logs import LogBuffer
from services.executor.operations import Finish
from services.executor.prepare import (
    AnyNode,
    PrepareError,
    WorkflowContext,
    node_code,
    prepare,
)
from services.executor.runners import check, python, shell, sql, sync
from services.executor.runners.base import AttemptContext, Runner, RunnerServices, RunResult
from shared import metrics
from shared.db.coalesce_windows import instance_messages
from shared.db.queries import load

Q = load(__file__)
log = structlog.get_logger("sluice.executor")

RUNNERS: dict[str, Runner] = {
    "shell": shell.run,
    "python": python.run,
    "sql": sql.run,
    "check": check.run,
    "sync": sync.run,
}

StopReason = Literal["terminated", "lost", "self_fenced", "released"]
_STOP_NOTES: dict[str, str] = {
    "terminated": "terminated by request; process group killed",
    "lost": "lease lost to another executor; attempt killed",
    "self_fenced": "could not renew the lease in time; attempt killed",
    "released": "executor shutting down; attempt released to run again elsewhere",
}

# Only shell and python nodes have a process; the others run inside the executor.
_TIMEOUT_NOTES: dict[str, str] = {
    "shell": "process group killed",
    "python": "process group killed",
    "check": "the condition did not hold in time",
    "sql": "statement cancelled",
    "sync": "transfer stopped",
}


class RunningAttempt:
    """An attempt this process holds the lease of, from claim until its finish is written."""

    def __init__(
        self,
        claimed: ClaimedNode,
        node: AnyNode | None,
        log_buffer: LogBuffer,
        context: WorkflowContext | None = None,
        fence_deadline: float = float("inf"),
    ) -> None:
        self.claimed = claimed
        # The node processes' own deadline (monotonic): see fencing.py.
        self.fence = FenceLink(fence_deadline)
        self.node = node
        self.context = context
        self.log = log_buffer
        self.claimed_mono = time.monotonic()
        self.stop_reason: StopReason | None = None
        self._stopped = asyncio.Event()

    @property
    def fenced(self) -> bool:
        """True once the database no longer lets this attempt write (or may not soon)."""
        return self.stop_reason in ("terminated", "lost", "self_fenced")

    def stop(self, reason: StopReason) -> None:
        """Ask the attempt to end now; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _note_exit(buffer: LogBuffer, result: RunResult) -> None:
    code = result.exit_code
    if result.ok or code is None or result.reason != "exit_code":
        return
    try:
        name = signal.Signals(code - 128).name if code > 128 else None
    except ValueError:
        name = None
    buffer.note(f"killed by {name} (exit status {code})" if name else f"exit code {code}")


def _texts(node: AnyNode, att: RunningAttempt) -> list[str]:
    """Node code and every string parameter the attempt resolves: where references can be."""
    c = att.claimed
    layers = (
        node.parameters,
        att.context.parameters if att.context else {},
        c.parameters,
        c.workspace_parameters,
    )
    return [node_code(node), *(v for p in layers for v in p.values() if isinstance(v, str))]


def _reads_outputs(node: AnyNode, att: RunningAttempt) -> bool:
    """Whether the attempt may reference `${nodes...}`: only then are ancestors' outputs read
    (a root has none)."""
    if att.claimed.is_root:
        return False
    return any("${nodes" in text for text in _texts(node, att))


def _reads_messages(node: AnyNode, att: RunningAttempt) -> bool:
    """Whether the attempt may reference `${workflow.triggerMessages...}`: a coalesced instance's
    messages (up to `max_events` of them) are read only then."""
    if att.claimed.kind != "triggered":
        return False
    return any("workflow.triggerMessages" in text for text in _texts(node, att))


async def _ancestor_outputs(att: RunningAttempt, services: RunnerServices) -> dict[str, Any]:
    rows = await services.pool.fetch(
        Q["ancestor_outputs"], att.claimed.node_id, att.claimed.instance_id
    )
    return {str(r["name"]): r["outputs"] or {} for r in rows}


async def _run(att: RunningAttempt, services: RunnerServices) -> RunResult:
    node = att.node
    if node is None:
        att.log.note("node is not in its workflow version")
        return RunResult(ok=False, reason="error")
    outputs = await _ancestor_outputs(att, services) if _reads_outputs(node, att) else None
    messages = None
    if _reads_messages(node, att):
        messages = await instance_messages(services.pool, att.claimed.instance_id)
    try:
        prepared = prepare(node, att.claimed, att.claimed.attempt, att.context, outputs, messages)
    except PrepareError as exc:
        # A missing path or an unbindable value fails the node, naming it: never "".
        att.log.note(f"parameters: {exc}")
        return RunResult(ok=False, reason="parameters")
    if prepared.parameters:
        await services.pool.execute(
            Q["record_parameters"],
            att.claimed.attempt_id,
            att.claimed.lease_token,
            prepared.parameters,
        )
    if node.type == "shell" and shell.is_noop(prepared.code):
        # In-process no-op: nothing to run, stop or time out.
        return RunResult(ok=True, exit_code=0)
    ctx = AttemptContext(
        node=node,
        claimed=att.claimed,
        prepared=prepared,
        log=att.log,
        services=services,
        fence=att.fence,
    )
    work = asyncio.create_task(RUNNERS[node.type](ctx))
    stopped = asyncio.create_task(att.wait_stopped())
    try:
        done, _ = await asyncio.wait(
            {work, stopped}, timeout=att.claimed.timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if work in done:
            if time.monotonic() >= att.fence.deadline:
                # The fence killed the node because renewals stopped: this executor can no longer
                # be sure it holds the lease, so it writes nothing, as when it fences itself.
                att.stop("self_fenced")
            else:
                result = work.result()
                if result.ok and result.outputs is not None:
                    # Fenced like every write; stored before the finish readies any descendant.
                    await services.pool.execute(
                        Q["record_outputs"],
                        att.claimed.attempt_id,
                        att.claimed.lease_token,
                        result.outputs,
                    )
                return result
        work.cancel()
        # The runner kills its process group when cancelled; wait until it has.
        await asyncio.wait({work})
        if att.stop_reason is None:
            att.log.note(f"timed out after {att.claimed.timeout_s:g}s; {_TIMEOUT_NOTES[node.type]}")
            return RunResult(ok=False, reason="timeout")
        att.log.note(_STOP_NOTES[att.stop_reason])
        return RunResult(ok=False, reason=att.stop_reason)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
        await ctx.remove_workdir()


async def execute(att: RunningAttempt, services: RunnerServices) -> Finish | None:
    """Run the attempt to its end; return what to record, or None when it is fenced off."""
    claimed = att.claimed
    started = time.monotonic()
    try:
        result = await _run(att, services)
    except Exception as exc:
        att.log.note(f"error: {type(exc).__name__}: {exc}")
        result = RunResult(ok=False, reason="error")
    _note_exit(att.log, result)
    att.log.close()
    duration = time.monotonic() - started
    outcome_label = "succeeded" if result.ok else "failed"
    metrics.NODE_DURATION.labels(claimed.type, outcome_label).observe(duration)
    if att.fenced:
        # Nothing more may be written: the database already moved on (terminate, sweep).
        executor_metrics.ATTEMPTS_FENCED.labels(att.stop_reason or "").inc()
        log.info("node_fenced", reason=att.stop_reason, duration_s=round(duration, 3))
        return None
    if result.reason == "released":
        # Only an attempt actually stopped by the shutdown is released; one that ended on its
        # own just before reports its real outcome.
        log.info("node_released", duration_s=round(duration, 3))
        return Finish(
            claimed.node_id,
            claimed.lease_token,
            claimed.attempt_id,
            "released",
            result.exit_code,
            "released",
        )
    log.info(
        f"node_{outcome_label}",
        duration_s=round(duration, 3),
        exit_code=result.exit_code,
        reason=result.reason,
    )
    return Finish(
        claimed.node_id,
        claimed.lease_token,
        claimed.attempt_id,
        "succeeded" if result.ok else "failed",
        result.exit_code,
        result.reason,
    )
