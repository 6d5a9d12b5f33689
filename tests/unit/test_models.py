"""Spec validation: invalid specs are rejected whole, with the field named."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.models.triggers import TriggerSpec
from shared.models.workflows import WorkflowSpec, find_cycle
from tests.factories import shell_node

TRIGGERS: TypeAdapter[Any] = TypeAdapter(TriggerSpec)


def wf(**kw: Any) -> dict[str, Any]:
    return {"name": "w", "type": "manual", "nodes": [shell_node("a")], **kw}


def errors(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        WorkflowSpec.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (wf(policy={"priority": 2}), "policy.priority", "one of 1, 3, 5, 7, 8"),
        (wf(policy={"max_parallel_instances": 0}), "policy.max_parallel_instances", "greater than"),
        (wf(policy={"max_parallel_instances": 100001}), "policy.max_parallel_instances", "less"),
        (wf(policy={"weighting": "upstream"}), "policy.weighting", "'none' or 'downward'"),
        (wf(policy={"overflow": "drop"}), "policy.overflow", "queue"),
        (wf(nodes=[]), "nodes", "at least 1"),
        (wf(nodes=[shell_node(f"n{i}") for i in range(401)]), "nodes", "at most 400"),
        (wf(nodes=[shell_node("a"), shell_node("a")]), "nodes.1.name", "duplicate node name"),
        (wf(nodes=[shell_node("a", ["zz"])]), "nodes.0.upstream", "unknown node 'zz'"),
        (wf(nodes=[shell_node("a", ["a"])]), "nodes.0.upstream", "depends on itself"),
        (
            wf(nodes=[shell_node("a", ["c"]), shell_node("b", ["a"]), shell_node("c", ["b"])]),
            "nodes",
            "cycle",
        ),
        (wf(nodes=[{"name": "a", "type": "perl", "code": "1"}]), "nodes.0", "perl"),
        (
            wf(nodes=[{"name": "a", "type": "sql", "code": "select 1"}]),
            "connection",
            "Field required",
        ),
        (wf(nodes=[{**shell_node("a"), "priority": 4}]), "nodes.0.shell.priority", "one of"),
        (wf(nodes=[{**shell_node("a"), "colour": "red"}]), "colour", "Extra inputs"),
        (wf(type="scheduled"), "schedule", "needs a schedule"),
        (
            wf(type="scheduled", schedule={"cron": "0 2 * * *", "timezone": "Mars/Olympus"}),
            "timezone",
            "unknown time zone",
        ),
        (wf(type="scheduled", schedule={"cron": "61 * * * *"}), "cron", ""),
        (wf(schedule={"cron": "0 2 * * *"}), "schedule", "only scheduled"),
        (wf(trigger="t"), "trigger", "only triggered"),
        (wf(name="bad name"), "name", "must start with"),
        (wf(nodes=[{"name": "a", "type": "check", "check": {"kind": "ftp"}}]), "check", "kind"),
    ],
)
def test_invalid_workflows_name_the_field(data: dict[str, Any], field: str, reason: str) -> None:
    text = errors(data)
    assert field.split(".")[-1] in text
    assert reason in text


def test_cycle_error_names_the_cycle() -> None:
    text = errors(
        wf(nodes=[shell_node("a", ["c"]), shell_node("b", ["a"]), shell_node("c", ["b"])])
    )
    assert "a -> c -> b -> a" in text or "c -> b -> a -> c" in text or "b -> a -> c -> b" in text


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": [], "b": ["a"], "c": ["a", "b"]}, False),
        ({"a": ["b"], "b": ["a"]}, True),
        ({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]}, True),
        ({f"n{i}": [f"n{i - 1}"] if i else [] for i in range(400)}, False),
    ],
)
def test_find_cycle(graph: dict[str, list[str]], has_cycle: bool) -> None:
    cycle = find_cycle(graph)
    assert (cycle is not None) is has_cycle
    if cycle:
        assert cycle[0] == cycle[-1]
        for a, b in itertools.pairwise(cycle):
            assert b in graph[a]


def test_valid_triggered_workflow_with_every_node_type() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "process_oss_file_workflow",
            "type": "triggered",
            "trigger": "oss_new_file_trigger",
            "parameters": {"region": "cn-hangzhou", "yesterday": "$[yyyymmdd-1]"},
            "policy": {"priority": 5, "weighting": "downward", "max_parallel_instances": 100},
            "nodes": [
                {"name": "print_path", "type": "shell", "code": "echo hi"},
                {"name": "py", "type": "python", "code": "print(1)", "upstream": ["print_path"]},
                {
                    "name": "q",
                    "type": "sql",
                    "code": "select 1",
                    "connection": "pg",
                    "upstream": ["py"],
                },
                {
                    "name": "wait",
                    "type": "check",
                    "check": {"kind": "s3_object", "bucket": "b", "key": "k"},
                    "interval_s": 5,
                    "timeout_s": 60,
                },
                {
                    "name": "load",
                    "type": "sync",
                    "sync": {
                        "kind": "s3_to_postgres",
                        "bucket": "b",
                        "key": "k.csv",
                        "connection": "pg",
                        "table": "t",
                    },
                    "upstream": ["wait"],
                },
            ],
        }
    )
    assert [n.type for n in spec.nodes] == ["shell", "python", "sql", "check", "sync"]


def test_triggered_workflow_without_trigger_is_valid() -> None:
    assert WorkflowSpec.model_validate(wf(type="triggered")).trigger is None


def test_quartz_schedule_accepted() -> None:
    spec = WorkflowSpec.model_validate(
        wf(type="scheduled", schedule={"cron": "0 0 2 ? * *", "timezone": "Asia/Shanghai"})
    )
    assert spec.zone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "t", "type": "kafka", "topic": "a b"}, "topic"),
        ({"name": "t", "type": "kafka", "topic": "t", "filter": "value.x =="}, "filter"),
        ({"name": "t", "type": "kafka", "topic": "t", "dedup": "etag"}, "dedup"),
        ({"name": "t", "type": "s3", "bucket": "Data"}, "bucket"),
        ({"name": "t", "type": "s3", "bucket": "data", "dedup": "offset"}, "dedup"),
        ({"name": "t", "type": "s3", "bucket": "data", "events": ["Object Created"]}, "events"),
        ({"name": "t", "type": "s3", "bucket": "data", "events": []}, "events"),
        ({"name": "t", "type": "sqs", "bucket": "data"}, "type"),
        ({"name": "t", "type": "s3", "bucket": "data", "prefix": "x"}, "prefix"),
    ],
)
def test_invalid_triggers_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TRIGGERS.validate_python(data)
    assert field in str(info.value)


def test_dataworks_triggers_are_valid() -> None:
    TRIGGERS.validate_python(
        {
            "name": "oss_new_file_trigger",
            "type": "s3",
            "bucket": "data",
            "events": ["s3:ObjectCreated:*"],
            "key_pattern": "input/*.csv",
            "dedup": "etag",
            "filter": None,
            "enabled": True,
        }
    )
    TRIGGERS.validate_python(
        {
            "name": "kafka_user_action_trigger",
            "type": "kafka",
            "topic": "user-behavior-topic",
            "key": "some-key",
            "connection": None,
            "dedup": "offset",
            "filter": "value.action_type == 'login'",
            "enabled": True,
        }
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"bad name": "x"}, "must start with"),
        ({"workflow": "x"}, "reserved"),
        ({"1abc": "x"}, "must start with"),
    ],
)
def test_parameter_names(params: dict[str, str], reason: str) -> None:
    assert reason in errors(wf(parameters=params))


def test_dedup_template_syntax_checked() -> None:
    with pytest.raises(ValidationError, match="dedup"):
        TRIGGERS.validate_python({"name": "t", "type": "kafka", "topic": "t", "dedup": "${a..b}"})
