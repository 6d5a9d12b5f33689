"""API tokens of a workspace (admin only). Secrets are shown once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from services.api.deps import Admin, Conn
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, decode_id, page_by_id
from services.api.schemas import Page, TokenCreate, TokenCreated
from shared.db import tokens as token_repo
from shared.db.tokens import TokenOut

router = APIRouter(tags=["tokens"])
TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/workspaces/{ws}/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated
)
async def create_token(body: TokenCreate, principal: Admin, conn: Conn) -> TokenCreated:
    token, secret = await token_repo.create(conn, principal.workspace_id, body.name, body.role)
    return TokenCreated(**token.model_dump(), secret=secret)


@router.get("/workspaces/{ws}/tokens", response_model=Page[TokenOut])
async def list_tokens(
    principal: Admin, conn: Conn, limit: Limit = 50, cursor: Cursor = None
) -> Page[TokenOut]:
    """Tokens oldest first, revoked ones included (with `revoked_at`)."""
    after = decode_id(cursor) or 0
    rows = [t for t in await token_repo.list_for(conn, principal.workspace_id) if t.id > after]
    page, nxt = page_by_id(rows, lambda t: t.id, limit)
    return Page(items=page, next_cursor=nxt)


@router.delete(
    "/workspaces/{ws}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def revoke_token(token_id: TokenId, principal: Admin, conn: Conn) -> Response:
    """Revoke a token: it stops working at once."""
    if not await token_repo.revoke(conn, principal.workspace_id, token_id):
        raise ApiError(404, f"token {token_id} not found (or already revoked)")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
