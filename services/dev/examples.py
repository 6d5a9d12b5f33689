"""The examples `sluice dev` loads at start, and the connections their nodes use.

Every trigger and workflow under `examples/` is created or updated in workspace `default`
(workflows published); a spec that does not validate is logged and skipped. The `examples_pg`
connection is a database of its own on the embedded PostgreSQL, never sluice's; `examples_s3` is
the embedded S3 with a bucket `examples`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from services.dev.servers.postgres import with_database
from services.dev.servers.s3 import EmbeddedS3, ensure_bucket
from shared import spec_yaml
from shared.db import connections as connection_repo
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.pool import Connection
from shared.db.queries import load
from shared.models.triggers import TRIGGER_TYPES, TriggerSpec
from shared.models.workflows import WorkflowSpec
from shared.secret_box import SecretBox

Q = load(__file__)
log = structlog.get_logger("sluice.dev")
_TRIGGERS: TypeAdapter[Any] = TypeAdapter(TriggerSpec)


def examples_dir() -> Path | None:
    """`examples/` of the working directory, else the one beside the installed sources."""
    for candidate in (Path("examples"), Path(__file__).resolve().parents[2] / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def read_specs(directory: Path) -> list[dict[str, Any]]:
    """Every spec document in the YAML/JSON files below `directory`, triggers first."""
    docs: list[dict[str, Any]] = []
    for path in sorted(
        [*directory.rglob("*.yaml"), *directory.rglob("*.yml"), *directory.rglob("*.json")]
    ):
        for doc in spec_yaml.load_all(path.read_text("utf-8")):
            items = doc if isinstance(doc, list) else [doc]
            for item in items:
                if isinstance(item, dict):
                    docs.append({**item, "__file__": str(path)})
    docs.sort(key=lambda d: 0 if d.get("type") in TRIGGER_TYPES else 1)
    return docs


async def load_examples(conn: Connection, directory: Path) -> list[str]:
    """Create or update every example trigger and workflow in `default`, workflows published."""
    loaded: list[str] = []
    for doc in read_specs(directory):
        origin = doc.pop("__file__")
        try:
            if doc.get("type") in TRIGGER_TYPES:
                trigger = _TRIGGERS.validate_python(doc)
                await trigger_repo.upsert(conn, "default", 1, trigger)
                loaded.append(f"trigger {trigger.name}")
            else:
                spec = WorkflowSpec.model_validate(doc)
                await workflow_repo.save(conn, 1, spec, publish=True)
                loaded.append(f"workflow {spec.name}")
        except (ValidationError, ValueError) as exc:
            log.warning("example_rejected", file=origin, error=str(exc).splitlines()[0])
    return loaded


EXAMPLES_CONNECTION = "examples_pg"


async def ensure_examples_connection(conn: Connection, dsn: str, box: SecretBox) -> None:
    """The `examples_pg` postgres connection of workspace `default`, to a database of its own on
    the embedded server, for the examples' sql nodes."""
    if not await conn.fetchval(Q["examples_database_exists"]):
        await conn.execute(Q["create_examples_database"])
    spec = connection_repo.ConnectionSpec(
        name=EXAMPLES_CONNECTION,
        kind="postgres",
        config={"dsn": with_database(dsn, "sluice_examples")},
    )
    await connection_repo.upsert(conn, 1, spec, box)


EXAMPLES_S3_CONNECTION = "examples_s3"
EXAMPLES_BUCKET = "examples"


async def ensure_examples_s3(conn: Connection, s3: EmbeddedS3, box: SecretBox) -> None:
    """The `examples_s3` connection of workspace `default` to the embedded S3, and the bucket
    `examples` there, for the examples' check and sync nodes."""
    async with s3.client("s3") as client:
        await ensure_bucket(client, EXAMPLES_BUCKET)
    spec = connection_repo.ConnectionSpec(
        name=EXAMPLES_S3_CONNECTION,
        kind="s3",
        config={"endpoint_url": s3.endpoint, "region": s3.region},
        secrets={"access_key_id": s3.access_key, "secret_access_key": s3.secret_key},
    )
    await connection_repo.upsert(conn, 1, spec, box)
