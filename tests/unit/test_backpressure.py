"""Backpressure decisions: hysteresis at 100 % / 80 %, which triggers and events are held."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.dev import read_specs
from shared.backpressure import PAUSED, Backpressure, Bounded, paused_next, resume_below
from shared.db.triggers import SPEC_ADAPTER
from shared.models.events import IncomingEvent
from shared.models.triggers import KafkaTriggerSpec, S3TriggerSpec
from shared.models.workflows import WorkflowSpec

NOW = datetime(2026, 12, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("max_waiting", "expected"),
    [(50, 40), (10, 8), (5, 4), (3, 3), (2, 2), (1, 1), (10_000, 8000), (7, 6)],
)
def test_resume_threshold_is_80_percent_rounded_up(max_waiting: int, expected: int) -> None:
    assert resume_below(max_waiting) == expected


@pytest.mark.parametrize(
    ("paused", "waiting", "max_waiting", "expected"),
    [
        (False, 0, 50, False),
        (False, 49, 50, False),
        (False, 50, 50, True),  # reaching the bound pauses
        (False, 51, 50, True),  # an in-flight batch overshot
        (True, 50, 50, True),
        (True, 45, 50, True),  # below the bound but not below 80 %: still paused
        (True, 40, 50, True),  # exactly 80 % is not below it
        (True, 39, 50, False),  # below 80 %: resume
        (True, 0, 50, False),
        (False, 45, 50, False),  # not paused and under the bound: stays running
        (False, 1, 1, True),
        (True, 0, 1, False),
    ],
)
def test_hysteresis(paused: bool, waiting: int, max_waiting: int, expected: bool) -> None:
    assert paused_next(paused, waiting, max_waiting) is expected


def test_a_queue_draining_and_filling_flips_only_at_the_edges() -> None:
    paused = False
    flips = []
    for waiting in [*range(0, 51), *range(50, 30, -1), *range(30, 51)]:
        now = paused_next(paused, waiting, 50)
        if now != paused:
            flips.append((waiting, now))
        paused = now
    assert flips == [(50, True), (39, False), (50, True)]


def _kafka(topic: str, *, name: str = "t", key: str | None = None) -> KafkaTriggerSpec:
    return KafkaTriggerSpec.model_validate(
        {"name": name, "type": "kafka", "topic": topic, **({"key": key} if key else {})}
    )


def _s3(bucket: str, *, name: str = "files", prefix: str | None = None) -> S3TriggerSpec:
    spec: dict[str, Any] = {"name": name, "type": "s3", "bucket": bucket}
    if prefix is not None:
        spec["key_pattern"] = f"{prefix}**"
    return S3TriggerSpec.model_validate(spec)


def _row(
    spec: KafkaTriggerSpec | S3TriggerSpec,
    *,
    trigger_id: int = 1,
    workflow_id: int = 10,
    workflow: str = "w",
    waiting: int = 0,
    max_waiting: int = 50,
    workspace_id: int = 1,
) -> Bounded:
    subject = spec.topic if isinstance(spec, KafkaTriggerSpec) else spec.bucket
    return Bounded(
        trigger_id=trigger_id,
        workspace_id=workspace_id,
        trigger=spec.name,
        type=spec.type,
        subject=subject,
        spec=spec,
        workflow_id=workflow_id,
        workflow=workflow,
        max_waiting=max_waiting,
        waiting=waiting,
    )


def _gauge(source: str, trigger: str, workspace_id: int = 1) -> float | None:
    for metric in PAUSED.collect():
        for sample in metric.samples:
            if sample.labels == {
                "source": source,
                "workspace_id": str(workspace_id),
                "trigger": trigger,
            }:
                return sample.value
    return None


def test_held_triggers_follow_hysteresis_per_workflow() -> None:
    gate = Backpressure("unit-hysteresis")
    spec = _kafka("orders", name="orders")
    gate.apply([_row(spec, waiting=49)])
    assert gate.holds() == []
    assert _gauge("unit-hysteresis", "orders") == 0
    gate.apply([_row(spec, waiting=50)])
    assert [h.trigger for h in gate.holds()] == ["orders"]
    assert gate.held_topics(None) == {"orders"}
    assert "'w' is at max_waiting 50 waiting instances" in gate.describe()
    assert "resumes below 40" in gate.holds()[0].reason
    assert _gauge("unit-hysteresis", "orders") == 1
    gate.apply([_row(spec, waiting=40)])
    assert gate.held_topics(None) == {"orders"}
    assert "has 40 of max_waiting 50 instances waiting" in gate.describe()
    gate.apply([_row(spec, waiting=39)])
    assert gate.holds() == []
    assert _gauge("unit-hysteresis", "orders") == 0
    gate.apply([])  # the binding went away: its series goes too
    assert _gauge("unit-hysteresis", "orders") is None


def test_on_change_sees_the_new_state() -> None:
    seen: list[str] = []
    gate = Backpressure("unit-change", on_change=lambda g: seen.append(g.describe()))
    gate.apply([_row(_kafka("orders", name="orders"), waiting=50)])
    gate.apply([_row(_kafka("orders", name="orders"), waiting=0)])
    assert "holding back trigger 'orders'" in seen[0]
    assert seen[1].startswith("no trigger held")


def test_a_trigger_feeding_a_full_and_a_free_workflow_is_held() -> None:
    gate = Backpressure("unit-two")
    spec = _kafka("orders", name="orders")
    gate.apply(
        [
            _row(spec, workflow_id=10, workflow="slow", waiting=50),
            _row(spec, workflow_id=11, workflow="fast", waiting=0),
        ]
    )
    [hold] = gate.holds()
    assert hold.full == (("slow", 50, 50),)
    assert gate.as_dict()["paused"][0]["trigger"] == "orders"


def test_held_topics_are_per_cluster() -> None:
    gate = Backpressure("unit-cluster")
    remote = KafkaTriggerSpec.model_validate(
        {"name": "r", "type": "kafka", "topic": "orders", "connection": "east"}
    )
    gate.apply([_row(remote, waiting=50, workspace_id=3)])
    assert gate.held_topics(None) == set()
    assert gate.held_topics("3/east") == {"orders"}


def _s3_event(bucket: str, key: str, *, error: str | None = None) -> IncomingEvent:
    message = {
        "type": "com.amazonaws.s3.ObjectCreated:Put",
        "data": {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
        },
    }
    return IncomingEvent(
        source="s3",
        subject=bucket,
        ref=f"{bucket}/{key}",
        message=None if error else message,
        error=error,
        received_at=NOW,
    )


def test_an_event_is_held_only_when_it_matches_a_held_trigger() -> None:
    gate = Backpressure("unit-events")
    gate.apply([_row(_s3("landing", prefix="in/"), waiting=50)])
    assert gate.holding(_s3_event("landing", "in/a.csv")) is not None
    assert gate.holding(_s3_event("landing", "out/a.csv")) is None  # filtered: not held
    assert gate.holding(_s3_event("other", "in/a.csv")) is None
    # Invalid events create nothing: recording them keeps poison out of the queues.
    assert gate.holding(_s3_event("landing", "in/a.csv", error="bad body")) is None


def test_kafka_events_are_held_per_cluster() -> None:
    gate = Backpressure("unit-kafka-events")
    gate.apply([_row(_kafka("orders"), waiting=50)])
    message = {"topic": "orders", "partition": 0, "offset": 1, "key": "k", "value": {}}
    here = IncomingEvent(
        source="kafka", subject="orders", ref="orders/0/1", message=message, received_at=NOW
    )
    assert gate.holding(here) is not None
    elsewhere = here.model_copy(update={"cluster": "2/west"})
    assert gate.holding(elsewhere) is None


def _spec(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "w",
        "type": "manual",
        "policy": policy,
        "nodes": [{"name": "a", "type": "shell", "code": "true"}],
    }


def test_max_waiting_is_a_positive_int_named_in_the_error() -> None:
    assert WorkflowSpec.model_validate(_spec({"max_waiting": 50})).policy.max_waiting == 50
    assert WorkflowSpec.model_validate(_spec({})).policy.max_waiting is None
    for bad in (0, -1, "50", 50.5, True):
        with pytest.raises(ValidationError, match=r"policy\.max_waiting"):
            WorkflowSpec.model_validate(_spec({"max_waiting": bad}))


def test_backpressure_example_loads_with_its_bound() -> None:
    docs = read_specs(Path(__file__).resolve().parents[2] / "examples" / "backpressure")
    [trigger_doc, workflow_doc] = [{k: v for k, v in d.items() if k != "__file__"} for d in docs]
    trigger = SPEC_ADAPTER.validate_python(trigger_doc)
    spec = WorkflowSpec.model_validate(workflow_doc)
    assert spec.trigger == trigger.name
    assert spec.policy.max_waiting == 50
    assert resume_below(spec.policy.max_waiting) == 40
