"""Named, workspace-scoped credentials. Secrets are write-only: no output model carries them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.common import Name, Record, Spec

Q = load(__file__)
ConnectionKind = Literal["postgres", "s3", "kafka", "smtp", "secret"]


class ConnectionSpec(Spec):
    """Input: `config` is readable later; `secrets` (passwords, keys) never is."""

    name: Name
    kind: ConnectionKind
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> ConnectionSpec:
        # Notification connections are checked here so a typo fails at save, not at send time.
        if self.kind == "smtp":
            for key in ("host", "from"):
                if not isinstance(self.config.get(key), str) or not self.config[key]:
                    raise ValueError(f"config.{key}: required for an smtp connection")
            if self.config.get("tls", "starttls") not in ("starttls", "tls", "none"):
                raise ValueError("config.tls: must be starttls, tls or none")
        if self.kind == "secret" and self.secrets is not None and not self.secrets.get("key"):
            raise ValueError("secrets.key: a secret connection holds its key under secrets.key")
        return self


class ConnectionOut(Record):
    id: int
    name: str
    kind: ConnectionKind
    config: dict[str, Any]
    secret_keys: list[str]
    created_at: datetime
    updated_at: datetime


class ResolvedConnection(Record):
    """Internal only (runners): config merged with secrets. Never logged or returned."""

    kind: ConnectionKind
    config: dict[str, Any]
    secrets: dict[str, str]

    def __repr__(self) -> str:
        return f"ResolvedConnection(kind={self.kind!r}, config={self.config!r}, secrets=***)"

    __str__ = __repr__


async def upsert(
    conn: Executor, workspace_id: int, spec: ConnectionSpec
) -> tuple[ConnectionOut, bool]:
    """Create or replace; omitted `secrets` keeps the stored ones. Returns (out, created)."""
    row = await conn.fetchrow(
        Q["upsert_connection"],
        workspace_id,
        spec.name,
        spec.kind,
        spec.config,
        spec.secrets or {},
        spec.secrets is not None,
    )
    assert row is not None
    data = dict(row)
    created = bool(data.pop("created"))
    return ConnectionOut(**data), created


async def get(conn: Executor, workspace_id: int, name: str) -> ConnectionOut:
    row = await conn.fetchrow(Q["get_connection"], workspace_id, name)
    if row is None:
        raise NotFound("connection", name)
    return ConnectionOut(**dict(row))


async def list_for(conn: Executor, workspace_id: int) -> list[ConnectionOut]:
    return [ConnectionOut(**dict(r)) for r in await conn.fetch(Q["list_connections"], workspace_id)]


async def delete(conn: Executor, workspace_id: int, name: str) -> None:
    if await conn.fetchval(Q["delete_connection"], workspace_id, name) is None:
        raise NotFound("connection", name)


async def resolve(conn: Executor, workspace_id: int, name: str) -> ResolvedConnection:
    row = await conn.fetchrow(Q["resolve_connection"], workspace_id, name)
    if row is None:
        raise NotFound("connection", name)
    return ResolvedConnection(kind=row["kind"], config=row["config"], secrets=row["secrets"])
