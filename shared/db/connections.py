"""Named, workspace-scoped credentials. Secrets are write-only: no output model carries them.

Secrets are stored sealed (`shared.secret_box`, AES-GCM under SLUICE_SECRET_KEY), bound to their
workspace and connection name; only their names are readable. Rows written before sealing existed
are sealed by `seal_plain` (run by `sluice migrate` and at api/executor start).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.common import Name, Record, Spec
from shared.secret_box import SecretBox, SecretKeyError
from shared.settings import Settings, SettingsError

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


def _context(workspace_id: int, name: str) -> str:
    """What a sealed value is bound to: opening it anywhere else fails."""
    return f"connection:{workspace_id}:{name}"


async def upsert(
    conn: Executor, workspace_id: int, spec: ConnectionSpec, box: SecretBox
) -> tuple[ConnectionOut, bool]:
    """Create or replace; omitted `secrets` keeps the stored ones. Returns (out, created)."""
    secrets = spec.secrets or {}
    row = await conn.fetchrow(
        Q["upsert_connection"],
        workspace_id,
        spec.name,
        spec.kind,
        spec.config,
        box.seal(secrets, _context(workspace_id, spec.name)) if secrets else None,
        sorted(secrets),
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


async def resolve(
    conn: Executor, workspace_id: int, name: str, box: SecretBox
) -> ResolvedConnection:
    """Config and opened secrets of a connection, for runners only."""
    row = await conn.fetchrow(Q["resolve_connection"], workspace_id, name)
    if row is None:
        raise NotFound("connection", name)
    secrets = dict(row["secrets"])
    if row["sealed_secrets"] is not None:
        secrets = box.open(row["sealed_secrets"], _context(workspace_id, name))
    return ResolvedConnection(kind=row["kind"], config=row["config"], secrets=secrets)


async def seal_plain(conn: Executor, box: SecretBox) -> int:
    """Seal every row still holding plain secrets; returns how many. Idempotent."""
    rows = await conn.fetch(Q["plain_connections"])
    for row in rows:
        secrets = {str(k): str(v) for k, v in dict(row["secrets"]).items()}
        sealed = box.seal(secrets, _context(row["workspace_id"], row["name"]))
        await conn.execute(Q["store_sealed"], row["id"], sealed, sorted(secrets))
    return len(rows)


async def rotate(conn: Executor, box: SecretBox) -> int:
    """Re-seal every secret not sealed with the current (first) key; returns how many.

    Opening needs the key that sealed each row, so run it with `new,old` in SLUICE_SECRET_KEY.
    """
    count = await seal_plain(conn, box)
    for row in await conn.fetch(Q["sealed_connections"]):
        if box.sealed_with(row["sealed_secrets"]) == box.current:
            continue
        context = _context(row["workspace_id"], row["name"])
        secrets = box.open(row["sealed_secrets"], context)
        resealed = box.seal(secrets, context)
        await conn.execute(Q["store_sealed"], row["id"], resealed, sorted(secrets))
        count += 1
    return count


async def check_key(conn: Executor, box: SecretBox) -> None:
    """Raise SecretKeyError when the keys cannot open the most recent stored secret."""
    row = await conn.fetchrow(Q["one_sealed_connection"])
    if row is not None:
        box.open(row["sealed_secrets"], _context(row["workspace_id"], row["name"]))


async def open_secrets(conn: Executor, settings: Settings) -> SecretBox:
    """At start: the keys of SLUICE_SECRET_KEY, checked against the stored secrets, with rows
    still holding plain secrets sealed. A missing or wrong key exits naming the variable."""
    box = settings.secret_box()
    try:
        await check_key(conn, box)
    except SecretKeyError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from None
    await seal_plain(conn, box)
    return box
