"""`Idempotency-Key` on run and backfill requests (DESIGN 9.1).

A client that lost the answer to a run request cannot tell whether the run exists; retrying with
the same key is safe: the first request's answer comes back and nothing new is created. The key is
claimed, the run created and the answer stored in one transaction, so a request that failed leaves
no key behind and its retry runs afresh. The same key with a different request is a client bug
and gets 409 rather than either of the two answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header, Response
from pydantic import BaseModel

from services.api.errors import ApiError
from shared.db import idempotency_keys as key_repo
from shared.db.pool import Connection

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="any printable ASCII string, at most 255 characters, e.g. a UUID; the same key "
        "within 24 h answers as the first request did and creates nothing",
    ),
]

M = TypeVar("M", bound=BaseModel)


def fingerprint(route: str, workflow: str, body: BaseModel) -> str:
    """A hash of what a request asks for; equal for the same request however it was spelled."""
    canonical = json.dumps(
        [route, workflow, body.model_dump(mode="json")], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def answer_once(
    conn: Connection,
    workspace_id: int,
    key: str | None,
    request_fingerprint: str,
    response: Response,
    model: type[M],
    create: Callable[[], Awaitable[M]],
) -> M:
    """`create()`'s answer, or with a key used before, the answer its first use got."""
    if key is None:
        return await create()
    async with conn.transaction():
        stored = await key_repo.claim(conn, workspace_id, key, request_fingerprint)
        if stored is None:
            created = await create()
            await key_repo.record(conn, workspace_id, key, created.model_dump(mode="json"))
            return created
    if stored.fingerprint != request_fingerprint:
        raise ApiError(
            409,
            f"{HEADER} {key!r} was already used with a different request; "
            "send a new key for a new request",
            field=HEADER,
        )
    response.headers[REPLAYED_HEADER] = "true"
    replayed: Any = stored.response
    return model.model_validate(replayed)
