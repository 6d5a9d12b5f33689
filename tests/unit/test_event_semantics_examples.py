"""The event-semantics examples load as `sluice dev` loads them, with the policies they show."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from services.dev import read_specs
from shared.coalesce import coalesce_of
from shared.models.triggers import Coalesce, TriggerSpec
from shared.models.workflows import WorkflowSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRIGGERS: TypeAdapter[TriggerSpec] = TypeAdapter(TriggerSpec)


def test_priority_aging_example() -> None:
    specs = {
        spec.name: spec
        for spec in (
            WorkflowSpec.model_validate({k: v for k, v in doc.items() if k != "__file__"})
            for doc in read_specs(EXAMPLES / "priority_aging")
        )
    }
    assert specs["bulk_load"].policy.priority == 8
    assert specs["bulk_load"].policy.aging_s is None
    assert specs["nightly_report"].policy.priority == 1
    assert specs["nightly_report"].policy.aging_s == 30


def test_aging_s_is_at_least_one_second_and_named_in_the_error() -> None:
    spec = {
        "name": "w",
        "type": "manual",
        "nodes": [{"name": "a", "type": "shell", "code": "true"}],
    }
    with pytest.raises(ValidationError, match=r"policy\.aging_s"):
        WorkflowSpec.model_validate({**spec, "policy": {"aging_s": 0.5}})


def test_ordered_lanes_example() -> None:
    [doc] = read_specs(EXAMPLES / "ordered_lanes")
    spec = WorkflowSpec.model_validate({k: v for k, v in doc.items() if k != "__file__"})
    assert spec.policy.lane == "${workflow.triggerMessage.key}"
    assert spec.policy.max_parallel_instances == 10


def test_coalescing_example() -> None:
    docs = {doc["name"]: doc for doc in read_specs(EXAMPLES / "coalescing")}
    trigger = TRIGGERS.validate_python(
        {k: v for k, v in docs["batch_files_trigger"].items() if k != "__file__"}
    )
    assert coalesce_of(trigger) == Coalesce(window_s=10, max_events=1000)
    spec = WorkflowSpec.model_validate(
        {k: v for k, v in docs["coalesced_load"].items() if k != "__file__"}
    )
    assert spec.trigger == "batch_files_trigger"
    assert "${workflow.triggerMessages}" in spec.nodes[0].code  # type: ignore[union-attr]
