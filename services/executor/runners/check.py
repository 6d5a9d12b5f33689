"""`check` nodes: probe a condition every `interval_s` until it holds (success) or the node's
`timeout_s` runs out (failure, reason `timeout`).

- `sql`: the query's first column of the first row is truthy (no row, NULL, false, 0 and the
  strings '', 'f', 'false', '0', 'no', 'off' are not).
- `s3_object`: the object exists (HEAD succeeds; 404 means not yet).

A probe that cannot reach its database or endpoint is logged as "unreachable" with the error and
tried again at the next interval; a wrong connection name or a broken query fails the node at
once. Each probe is bounded by the time the node has left (minus a margin), so the last line before
a timeout says what the endpoint answered rather than leaving a probe cut off mid-retry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as EndpointUnreachable

from services.executor.runners import connect
from services.executor.runners.base import AttemptContext, RunResult
from shared.models.workflows import CheckNode, S3ObjectCheck, SqlCheck

_FALSE_STRINGS = frozenset({"", "f", "false", "0", "no", "off"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT = (OSError, asyncpg.PostgresConnectionError, EndpointUnreachable, HTTPClientError)
# A probe ends this long (at most) before the node's timeout, so its outcome is logged first.
_PROBE_MARGIN_S = 0.2


def truthy(value: Any) -> bool:
    """Whether a check query's value means 'the condition holds'."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


def is_missing(error: ClientError) -> bool:
    """A HEAD that says the object does not exist (as opposed to access denied etc.)."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _MISSING_CODES or status == 404


async def _probe_sql(ctx: AttemptContext, check: SqlCheck) -> bool:
    async with connect.postgres(
        ctx.services.pool,
        ctx.claimed.workspace_id,
        check.connection,
        ctx.claimed.timeout_s,
        box=ctx.services.settings.secret_box(),
    ) as conn:
        return truthy(await conn.fetchval(ctx.prepared.code, *ctx.prepared.args))


async def _probe_s3(ctx: AttemptContext, check: S3ObjectCheck, within_s: float | None) -> bool:
    async with connect.s3(
        ctx.services.pool,
        ctx.claimed.workspace_id,
        check.connection,
        ctx.services.settings.secret_box(),
        within_s=within_s,
    ) as client:
        try:
            await client.head_object(Bucket=check.bucket, Key=check.key)
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
    return True


async def run(ctx: AttemptContext) -> RunResult:
    node = ctx.node
    assert isinstance(node, CheckNode)
    check = node.check
    timeout_s = ctx.claimed.timeout_s
    deadline = None
    if timeout_s is not None:
        deadline = time.monotonic() + timeout_s - min(_PROBE_MARGIN_S, timeout_s / 10)
    probe = 0
    while True:
        probe += 1
        left = None if deadline is None else max(deadline - time.monotonic(), 0.05)
        try:
            if isinstance(check, SqlCheck):
                met = await asyncio.wait_for(_probe_sql(ctx, check), left)
            else:
                met = await asyncio.wait_for(_probe_s3(ctx, check, left), left)
        except TimeoutError:
            ctx.log.note(f"probe {probe}: unreachable (no answer within {left or 0:.1f}s)")
            met = False
        except _TRANSIENT as exc:
            ctx.log.note(f"probe {probe}: unreachable ({type(exc).__name__}: {exc})")
            met = False
        else:
            ctx.log.note(f"probe {probe}: {'condition met' if met else 'not yet'}")
        if met:
            return RunResult(ok=True)
        await asyncio.sleep(node.interval_s)
