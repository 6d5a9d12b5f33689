"""Idempotency keys of run requests: the first answer to a key, bound to the request it answered.

Callers hold one transaction around `claim`, the creation of what the request asks for and
`record`, so a key is stored exactly when its run or backfill is.
"""

from __future__ import annotations

from typing import Any, Final

from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.common import Record

Q = load(__file__)

# DESIGN 9.1: the same key within 24 h answers as the first request did.
KEY_LIFETIME_S: Final = 24 * 3600.0


class StoredKey(Record):
    """A key already used: the hash of the request it came with and the answer it got."""

    fingerprint: str
    response: Any


async def claim(
    conn: Connection, workspace_id: int, key: str, fingerprint: str
) -> StoredKey | None:
    """None when the key is now ours (new or expired); else what its first use stored."""
    if await conn.fetchval(Q["claim_key"], workspace_id, key, fingerprint, KEY_LIFETIME_S):
        return None
    row = await conn.fetchrow(Q["stored_key"], workspace_id, key)
    assert row is not None  # the conflicting row is committed: ON CONFLICT waited for it
    return StoredKey(fingerprint=row["fingerprint"], response=row["response"])


async def record(conn: Connection, workspace_id: int, key: str, response: Any) -> None:
    """Store the answer a claimed key is to replay."""
    await conn.execute(Q["record_response"], workspace_id, key, response)


async def prune(conn: Executor, lifetime_s: float = KEY_LIFETIME_S) -> int:
    """Forget keys older than their lifetime."""
    status = await conn.execute(Q["prune_keys"], lifetime_s)
    return int(status.split()[-1])
