"""Property-based run of the whole OpenAPI schema (schemathesis) against `sluice run api`.

Every operation gets generated valid and invalid requests; no answer may be a 5xx, and every
answer must be documented: its status code, content type and body schema. The run is bounded
(a few examples per operation, derandomized) so it takes well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import shell_node
from tests.support.api import ApiServer, api_subprocess

EXAMPLES_PER_MODE = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Revoking a token could revoke the one the run authenticates with: the rest would all be 401.
SKIPPED = {("DELETE", "/api/v1/workspaces/{ws}/tokens/{token_id}")}


def _pin(spec: dict[str, Any]) -> dict[str, Any]:
    """Aim the run at workspace `default` (a random name only ever gets 403) and never follow a
    log (a followed log of a node nobody runs streams until the server stops)."""
    pinned = copy.deepcopy(spec)
    for ops in pinned["paths"].values():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] == "ws":
                    param["schema"] = {"type": "string", "enum": ["default"]}
                if param["name"] == "follow":
                    param["schema"] = {"type": "boolean", "enum": [False]}
    return pinned


def _fuzz(server: ApiServer, spec: dict[str, Any]) -> tuple[list[str], Counter[int]]:
    """Run every operation in both generation modes; the failures found and the statuses seen."""
    schema = schemathesis.openapi.from_dict(_pin(spec))
    auth = {"Authorization": f"Bearer {server.token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the schema has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case[Any]) -> None:
                response = case.call_and_validate(
                    base_url=server.url, headers=auth, checks=CHECKS, timeout=15
                )
                statuses[response.status_code] += 1

            try:
                exercise()
            except Unsatisfiable:
                # Nothing invalid to send: the operation takes no parameters and no body.
                assert mode == GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # every operation's, not the first
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures, statuses


async def test_no_generated_request_breaks_the_api(db_url: str) -> None:
    async with api_subprocess(db_url) as server:
        async with server.client() as client:
            spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
            await client.put("/workspaces/default/workflows/wf", json=spec, params={"publish": 1})
            await client.post("/workspaces/default/workflows/wf/runs", json={})
        async with httpx.AsyncClient() as plain:
            openapi = (await plain.get(server.url + "/openapi.json")).json()
        failures, statuses = await asyncio.to_thread(_fuzz, server, openapi)
    assert not failures, "\n\n".join(failures)
    # The run reached past authentication: generated requests were accepted and rejected.
    assert sum(n for status, n in statuses.items() if status < 300) > 50, statuses
    assert statuses[422] > 50 and statuses[404] > 0, statuses
