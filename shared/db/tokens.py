"""API tokens: workspace-scoped, role-bearing, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Literal

from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.common import Record

Q = load(__file__)
Role = Literal["admin", "developer", "operator", "viewer"]
TOKEN_PREFIX = "slc_"


class TokenOut(Record):
    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Principal(Record):
    """Who a request is: the token's workspace and role."""

    token_id: int
    workspace_id: int
    workspace: str
    role: Role


def hash_token(secret: str) -> bytes:
    # Tokens are 256-bit random: a fast unsalted hash is enough, and lookup stays an index probe.
    return hashlib.sha256(secret.encode("utf-8")).digest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create(conn: Executor, workspace_id: int, name: str, role: Role) -> tuple[TokenOut, str]:
    """Create a token; the secret is returned once and never stored."""
    secret = new_secret()
    row = await conn.fetchrow(Q["create_token"], workspace_id, name, role, hash_token(secret))
    assert row is not None
    return TokenOut(**dict(row)), secret


async def ensure(
    conn: Executor,
    workspace_id: int,
    name: str,
    role: Role,
    secret: str,
) -> int:
    """Create or re-activate a token with a known secret (SLUICE_BOOTSTRAP_TOKEN)."""
    token_id = await conn.fetchval(Q["ensure_token"], workspace_id, name, role, hash_token(secret))
    return int(token_id)


async def authenticate(conn: Executor, secret: str) -> Principal | None:
    """Find the live token for a presented secret.

    The lookup is by hash through a unique index, so timing reveals nothing about stored secrets.
    """
    row = await conn.fetchrow(Q["authenticate"], hash_token(secret))
    if row is None:
        return None
    if row["stale"]:
        await conn.execute(Q["touch_token"], row["id"])
    return Principal(
        token_id=row["id"],
        workspace_id=row["workspace_id"],
        workspace=row["workspace"],
        role=row["role"],
    )


async def list_for(conn: Executor, workspace_id: int) -> list[TokenOut]:
    return [TokenOut(**dict(r)) for r in await conn.fetch(Q["list_tokens"], workspace_id)]


async def revoke(conn: Executor, workspace_id: int, token_id: int) -> bool:
    return await conn.fetchval(Q["revoke_token"], workspace_id, token_id) is not None
