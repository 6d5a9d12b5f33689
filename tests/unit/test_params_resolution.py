"""Parameter sources, precedence, built-ins and recursive resolution."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.params.paths import MissingPath
from shared.params.resolution import (
    ParameterCycleError,
    ParameterError,
    Placeholder,
    Resolution,
    ResolutionInput,
    WorkflowType,
    find_placeholders,
    resolve_parameters,
)

KAFKA_MESSAGE = {
    "topic": "user-behavior-topic",
    "partition": 0,
    "offset": 7,
    "key": None,
    "value": '{"user_id": "1001", "action_type": "login", "timestamp": 1688888888}',
    "headers": {"message-id": "m-1"},
}
# 2026-03-10 01:30 in Shanghai is still 2026-03-09 in UTC.
CYCTIME = datetime(2026, 3, 9, 17, 30, 5, tzinfo=UTC)


def make_input(**changes: Any) -> ResolutionInput:
    fields: dict[str, Any] = {
        "workflow_type": "triggered",
        "cyctime": CYCTIME,
        "timezone": "Asia/Shanghai",
        "workflow_name": "handle_user_action",
        "instance_id": 4242,
        "version": 3,
        "node_name": "parse",
        "trigger_message": KAFKA_MESSAGE,
    }
    fields.update(changes)
    return ResolutionInput(**fields)


def resolve(**changes: Any) -> Resolution:
    return resolve_parameters(make_input(**changes))


def with_params(params: Mapping[str, object], **changes: Any) -> Resolution:
    return resolve(workflow_params=params, **changes)


# Which layer defines "p" -> which value wins, per workflow type.
LAYERS = ("workspace", "workflow", "node", "runtime")


@pytest.mark.parametrize(
    ("workflow_type", "defined", "winner"),
    [
        ("scheduled", ("workspace", "workflow", "node", "runtime"), "runtime"),
        ("scheduled", ("workspace", "workflow", "node"), "node"),
        ("scheduled", ("workspace", "workflow"), "workflow"),
        ("scheduled", ("workspace",), "workspace"),
        ("scheduled", ("workspace", "node"), "node"),
        ("triggered", ("workspace", "workflow", "node", "runtime"), "runtime"),
        ("triggered", ("workflow", "node"), "node"),
        ("triggered", ("workspace", "workflow"), "workflow"),
        ("manual", ("workspace", "workflow", "node", "runtime"), "runtime"),
        ("manual", ("workspace", "workflow", "node"), "workflow"),
        ("manual", ("workflow", "node"), "workflow"),
        ("manual", ("workspace", "node"), "node"),
        ("manual", ("workspace",), "workspace"),
        ("manual", ("node", "runtime"), "runtime"),
    ],
)
def test_precedence(workflow_type: WorkflowType, defined: tuple[str, ...], winner: str) -> None:
    layers = {f"{layer}_params": {"p": layer} for layer in defined}
    resolution = resolve(workflow_type=workflow_type, **layers)
    assert resolution.values["p"] == winner


def test_all_layers_contribute_their_own_names() -> None:
    resolution = resolve(
        workspace_params={"a": "ws"},
        workflow_params={"b": "wf"},
        node_params={"c": "node"},
        runtime_params={"d": "run"},
    )
    assert resolution.values == {"a": "ws", "b": "wf", "c": "node", "d": "run"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("bizdate", "20260309"),
        ("cyctime", "20260310013005"),
        ("system.biz.date", "20260309"),
        ("system.biz.curdate", "20260310"),
        ("system.datetime", "20260310013005"),
        ("workflow.name", "handle_user_action"),
        ("workflow.instanceId", "4242"),
        ("workflow.version", "3"),
        ("node.name", "parse"),
        ("workflow.triggerMessage.topic", "user-behavior-topic"),
        ("workflow.triggerMessage.offset", "7"),
        ("workflow.triggerMessage.key", "null"),
        ("workflow.triggerMessage.value", KAFKA_MESSAGE["value"]),
        ("workflow.triggerMessage.value.user_id", "1001"),
        ("workflow.triggerMessage.value.timestamp", "1688888888"),
        ("workflow.triggerMessage.headers.message-id", "m-1"),
        ("workflow.triggerMessage.headers", '{"message-id":"m-1"}'),
    ],
)
def test_builtins_in_the_workflow_zone(path: str, expected: str) -> None:
    assert resolve().resolve(path) == expected


def test_whole_trigger_message_renders_as_compact_json() -> None:
    rendered = resolve().resolve("workflow.triggerMessage")
    assert rendered.startswith('{"topic":"user-behavior-topic","partition":0,"offset":7,')
    assert json.loads(rendered) == KAFKA_MESSAGE
    assert resolve(trigger_message=None).resolve("workflow.triggerMessage") == "null"


@pytest.mark.parametrize(
    ("timezone", "bizdate", "curdate", "cyctime"),
    [
        ("UTC", "20260308", "20260309", "20260309173005"),
        ("Asia/Shanghai", "20260309", "20260310", "20260310013005"),
        ("America/New_York", "20260308", "20260309", "20260309133005"),
    ],
)
def test_builtins_follow_the_time_zone(
    timezone: str, bizdate: str, curdate: str, cyctime: str
) -> None:
    resolution = resolve(timezone=timezone)
    assert resolution.resolve("bizdate") == bizdate
    assert resolution.resolve("system.biz.curdate") == curdate
    assert resolution.resolve("cyctime") == cyctime


def test_bizdate_override() -> None:
    resolution = resolve(bizdate=date(2025, 12, 31), workflow_params={"ds": "${bizdate}"})
    assert resolution.resolve("bizdate") == "20251231"
    assert resolution.resolve("system.biz.date") == "20251231"
    assert resolution.resolve("system.biz.curdate") == "20260310"
    assert resolution.values["ds"] == "20251231"


def test_a_parameter_named_bizdate_shadows_the_builtin() -> None:
    resolution = with_params({"bizdate": "$[yyyymmdd-2]"})
    assert resolution.resolve("bizdate") == "20260308"
    assert resolution.resolve("system.biz.date") == "20260309"


def test_builtin_namespaces_win_over_parameters() -> None:
    resolution = with_params({"workflow": '{"name": "param"}'})
    assert resolution.resolve("workflow.name") == "handle_user_action"
    assert resolution.values["workflow"] == '{"name": "param"}'


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ds": "$[yyyymmdd-1]"}, {"ds": "20260309"}),
        ({"hour": "$[yyyymmddhh24-1/24]"}, {"hour": "2026031000"}),
        ({"prev": "$[add_months(yyyymm,-1)]"}, {"prev": "202602"}),
        ({"path": "s3://b/dt=$[yyyy-mm-dd]/${node.name}"}, {"path": "s3://b/dt=2026-03-10/parse"}),
        ({"a": "${b}-a", "b": "${c}-b", "c": "$[yyyymmdd]"}, {"a": "20260310-b-a"}),
        ({"a": "${b}${b}", "b": "x"}, {"a": "xx"}),
        ({"uid": "${workflow.triggerMessage.value.user_id}"}, {"uid": "1001"}),
        ({"msg": "${workflow.triggerMessage}", "uid": "${msg.value.user_id}"}, {"uid": "1001"}),
        ({"cfg": '{"region": "eu", "n": [1, 2]}', "r": "${cfg.region}/${cfg.n.1}"}, {"r": "eu/2"}),
        ({"cfg": {"region": "eu"}, "r": "${cfg.region}"}, {"cfg": '{"region":"eu"}', "r": "eu"}),
        ({"n": 5, "m": "${n}0"}, {"n": "5", "m": "50"}),
        ({"flag": True, "none": None}, {"flag": "true", "none": "null"}),
        ({"x": "${workflow.triggerMessage.nope:-fallback}"}, {"x": "fallback"}),
        ({"x": "${workflow.triggerMessage.nope:-}"}, {"x": ""}),
        ({"x": "${missing_param:-d}"}, {"x": "${missing_param:-d}"}),
        ({"x": "${HOME}/$HOME/${1}/${#arr[@]}"}, {"x": "${HOME}/$HOME/${1}/${#arr[@]}"}),
        ({"x": "${HOME:-${bizdate}}"}, {"x": "${HOME:-20260309}"}),
        ({"x": "${workflow.triggerMessage.headers.message-id}"}, {"x": "m-1"}),
    ],
)
def test_parameter_values_resolve(params: dict[str, object], expected: dict[str, str]) -> None:
    values = with_params(params).values
    assert {name: values[name] for name in expected} == expected


def test_values_from_the_event_are_not_expanded_again() -> None:
    message = {"value": "$[yyyymmdd] ${bizdate} ${x}"}
    resolution = resolve(
        trigger_message=message, workflow_params={"v": "${workflow.triggerMessage.value}!"}
    )
    assert resolution.values["v"] == "$[yyyymmdd] ${bizdate} ${x}!"
    assert resolution.resolve("workflow.triggerMessage.value") == "$[yyyymmdd] ${bizdate} ${x}"


@pytest.mark.parametrize(
    ("params", "cycle"),
    [
        ({"a": "${a}"}, "parameter cycle: a -> a"),
        ({"a": "${b}", "b": "${a}"}, "parameter cycle: a -> b -> a"),
        ({"a": "x${b}", "b": "${c.k}", "c": "${a}"}, "parameter cycle: a -> b -> c -> a"),
        ({"z": "${a}", "a": "${b}", "b": "${a}"}, "parameter cycle: a -> b -> a"),
        ({"a": "${b:-default}", "b": "${a}"}, "parameter cycle: a -> b -> a"),
    ],
)
def test_cycles_are_errors_naming_the_cycle(params: dict[str, object], cycle: str) -> None:
    with pytest.raises(ParameterCycleError) as caught:
        with_params(params)
    assert str(caught.value) == cycle


@pytest.mark.parametrize(
    ("params", "trigger_message", "message"),
    [
        (
            {"uid": "${workflow.triggerMessage.value.user}"},
            KAFKA_MESSAGE,
            "missing path 'workflow.triggerMessage.value.user' (no key 'user') in parameter 'uid'",
        ),
        (
            {"a": "${b}", "b": "id=${workflow.triggerMessage.data.key}"},
            KAFKA_MESSAGE,
            "missing path 'workflow.triggerMessage.data.key' (no key 'data') in parameter 'b'",
        ),
        (
            {"v": "${workflow.triggerMessage.value}"},
            None,
            "missing path 'workflow.triggerMessage.value' "
            "(value at 'workflow.triggerMessage' is null) in parameter 'v'",
        ),
        (
            {"v": "${workflow.nme}"},
            KAFKA_MESSAGE,
            "missing path 'workflow.nme' (no key 'nme') in parameter 'v'",
        ),
        (
            {"cfg": "plain", "v": "${cfg.region}"},
            KAFKA_MESSAGE,
            "missing path 'cfg.region' (value at 'cfg' is a string that is not a JSON object "
            "or array) in parameter 'v'",
        ),
    ],
)
def test_missing_paths_name_the_path_and_parameter(
    params: dict[str, object], trigger_message: object, message: str
) -> None:
    with pytest.raises(MissingPath) as caught:
        with_params(params, trigger_message=trigger_message)
    assert str(caught.value) == message


def test_bad_date_expression_names_parameter_and_expression() -> None:
    with pytest.raises(ParameterError) as caught:
        with_params({"ds": "$[yyyymmdd*7]"})
    assert str(caught.value).startswith("parameter 'ds': unknown date expression '$[yyyymmdd*7]'")


def test_ident_modifier_in_a_parameter_value_is_an_error() -> None:
    with pytest.raises(ParameterError, match="':ident' is only meaningful in SQL"):
        with_params({"a": "x", "t": "${a:ident}"})


@pytest.mark.parametrize(
    ("path", "default", "expected"),
    [
        ("workflow.triggerMessage.value.user_id", None, "1001"),
        ("workflow.triggerMessage.value.user_id", "d", "1001"),
        ("workflow.triggerMessage.value.nope", "d", "d"),
        ("workflow.triggerMessage.value.nope", "", ""),
        ("p", None, "v"),
        ("p.x", "no field", "no field"),
        ("HOME", "d", "d"),
    ],
)
def test_resolve_with_defaults(path: str, default: str | None, expected: str) -> None:
    assert with_params({"p": "v"}).resolve(path, default) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("workflow.triggerMessage.value.nope", "missing path 'workflow.triggerMessage.value.nope'"),
        ("HOME", "missing path 'HOME' (not a parameter or built-in variable)"),
        ("system.biz.nope", "missing path 'system.biz.nope' (no key 'nope')"),
    ],
)
def test_resolve_without_default_raises(path: str, message: str) -> None:
    with pytest.raises(MissingPath) as caught:
        resolve().resolve(path)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("path", "resolvable"),
    [
        ("p", True),
        ("p.field", True),
        ("p[0]", True),
        ("bizdate", True),
        ("cyctime", True),
        ("workflow.name", True),
        ("workflow.triggerMessage.anything.at.all", True),
        ("system.biz.date", True),
        ("node.name", True),
        ("workflow", False),
        ("HOME", False),
        ("FILE_PATH", False),
        ("pp", False),
        ("workflowx.name", False),
    ],
)
def test_resolvable(path: str, resolvable: bool) -> None:
    assert with_params({"p": "v"}).resolvable(path) is resolvable


PARAMS_FOR_SCAN = {"bizdate", "p"}


def scan_resolvable(path: str) -> bool:
    head = path.split(".", 1)[0].split("[", 1)[0]
    return head in PARAMS_FOR_SCAN or (head in {"workflow", "system", "node"} and "." in path)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("echo ${bizdate}", [("bizdate", None, False)]),
        ("${p:-x y}${p:ident}", [("p", "x y", False), ("p", None, True)]),
        (
            'FILE_PATH="${workflow.triggerMessage.data.oss.object.key}"',
            [("workflow.triggerMessage.data.oss.object.key", None, False)],
        ),
        ('echo "${FILE_PATH}" ${HOME} $HOME ${1} ${#p} ${p%x} ${p-x} ${!p}', []),
        ("${HOME:-${p}}", [("p", None, False)]),
        (
            "${workflow.triggerMessage.headers.message-id}",
            [("workflow.triggerMessage.headers.message-id", None, False)],
        ),
        (
            '${workflow.triggerMessage.headers["a.b"]}',
            [('workflow.triggerMessage.headers["a.b"]', None, False)],
        ),
        ("${p.a[0].b}", [("p.a[0].b", None, False)]),
        ("$[yyyymmdd] $p {p} $ {p}", []),
    ],
)
def test_find_placeholders(code: str, expected: list[tuple[str, str | None, bool]]) -> None:
    found = find_placeholders(code, scan_resolvable)
    assert [(p.path, p.default, p.ident) for p in found] == expected
    for placeholder in found:
        assert code[placeholder.start : placeholder.end].startswith("${" + placeholder.path)
        assert code[placeholder.end - 1] == "}"


def test_placeholder_key_groups_equal_references() -> None:
    a = Placeholder(start=0, end=4, path="p", default=None, ident=False)
    b = Placeholder(start=9, end=13, path="p", default=None, ident=True)
    c = Placeholder(start=9, end=16, path="p", default="x", ident=False)
    assert a.key == b.key != c.key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cyctime": datetime(2026, 3, 10)}, "cyctime must be timezone-aware"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"workflow_type": "sometimes"}, "unknown workflow type 'sometimes'"),
    ],
)
def test_invalid_inputs(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_input(**changes)


def test_cyctime_in_another_zone_is_converted() -> None:
    shanghai = CYCTIME.astimezone(ZoneInfo("Asia/Shanghai"))
    assert resolve(cyctime=shanghai).values == resolve().values
    assert resolve(cyctime=shanghai).resolve("cyctime") == "20260310013005"
