"""Request dependencies: the database pool, the caller's token, and role checks.

Authorization model (docs/api.md has the full matrix): a token belongs to one workspace and has
one role; roles are ordered viewer < operator < developer < admin and each includes the ones
below it. A token used on another workspace's path gets 403 before anything is looked up, so the
answer is the same whether the object exists or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final

import asyncpg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import ApiError
from shared.db import tokens as token_repo
from shared.db.pool import Connection
from shared.db.tokens import Principal, Role
from shared.settings import Settings

RANK: Final[dict[str, int]] = {"viewer": 0, "operator": 1, "developer": 2, "admin": 3}
_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer slc_...`")


def get_pool(request: Request) -> asyncpg.Pool[Any]:
    pool: asyncpg.Pool[Any] = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_conn(request: Request) -> AsyncIterator[Connection]:
    """A pooled connection for the duration of the route function."""
    async with get_pool(request).acquire() as conn:
        yield conn


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The token's principal; a missing, unknown or revoked token is 401."""
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "missing bearer token", headers=_CHALLENGE)
    principal = await token_repo.authenticate(get_pool(request), credentials.credentials)
    if principal is None:
        raise ApiError(401, "invalid or revoked token", headers=_CHALLENGE)
    return principal


def allows(principal_role: str, needed: Role) -> bool:
    return RANK[principal_role] >= RANK[needed]


def require(needed: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting tokens of the path's workspace holding `needed` or a higher role."""

    async def check(
        ws: Annotated[str, Path(description="workspace name", max_length=128)],
        principal: Annotated[Principal, Depends(authenticate)],
    ) -> Principal:
        if principal.workspace != ws:
            raise ApiError(
                403,
                f"this token belongs to workspace {principal.workspace!r}; "
                f"it grants nothing in workspace {ws!r}",
            )
        if not allows(principal.role, needed):
            raise ApiError(
                403, f"role {principal.role!r} may not do this; it needs {needed!r} or higher"
            )
        return principal

    return check


Conn = Annotated[Connection, Depends(get_conn)]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Developer = Annotated[Principal, Depends(require("developer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Authenticated = Annotated[Principal, Depends(authenticate)]
