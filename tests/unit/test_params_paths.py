"""Paths into JSON values, value rendering and `${...}` templates."""

from __future__ import annotations

import pytest

from shared.params.paths import MissingPath, lookup, parse_path, render_template, render_value

KAFKA_MESSAGE = {
    "topic": "user-behavior-topic",
    "partition": 3,
    "offset": 42,
    "timestamp": 1688888888000,
    "key": "k1",
    "value": '{"user_id": "1001", "action_type": "login", "timestamp": 1688888888}',
    "headers": {"message-id": "m-17", "trace.id": "t-1"},
}
S3_EVENT = {
    "specversion": "1.0",
    "data": {
        "s3": {"bucket": {"name": "in"}, "object": {"key": "input/a b.csv", "size": 59537}},
        "records": [{"n": 0}, {"n": 1}],
    },
}
ROOT = {"workflow": {"triggerMessage": KAFKA_MESSAGE}, "s3": S3_EVENT, "list": [10, [20, 21]]}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("workflow.triggerMessage.topic", "user-behavior-topic"),
        ("workflow.triggerMessage.partition", 3),
        ("workflow.triggerMessage.value", KAFKA_MESSAGE["value"]),
        ("workflow.triggerMessage.value.user_id", "1001"),
        ("workflow.triggerMessage.value.timestamp", 1688888888),
        ("workflow.triggerMessage.headers.message-id", "m-17"),
        ('workflow.triggerMessage.headers["trace.id"]', "t-1"),
        ("workflow.triggerMessage.headers['trace.id']", "t-1"),
        ("s3.data.s3.object.key", "input/a b.csv"),
        ("s3.data.records.1.n", 1),
        ("s3.data.records[1].n", 1),
        ("s3.data.records[0]", {"n": 0}),
        ("list.1.0", 20),
        ("list[1][1]", 21),
    ],
)
def test_lookup_follows_paths(path: str, expected: object) -> None:
    assert lookup(ROOT, path) == expected


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        # A JSON string inside a JSON string is parsed at each step.
        ({"a": '{"b": "{\\"c\\": [1, 2]}"}'}, "a.b.c.1", 2),
        ({"a": ' [ {"b": true} ] '}, "a.0.b", True),
        ({"a": [{"b": None}]}, "a.0.b", None),
        ([1, 2, 3], "[2]", 3),
        ({"0": "zero"}, "0", "zero"),
        ({"a": {"0": "key zero"}}, "a[0]", "key zero"),
    ],
)
def test_lookup_parses_json_strings_and_indexes(root: object, path: str, expected: object) -> None:
    assert lookup(root, path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "workflow.triggerMessage.value.user",
            "missing path 'workflow.triggerMessage.value.user' (no key 'user')",
        ),
        (
            "workflow.triggerMessage.key.x",
            "missing path 'workflow.triggerMessage.key.x' "
            "(value at 'workflow.triggerMessage.key' is a string that is not a JSON object "
            "or array)",
        ),
        (
            "workflow.triggerMessage.partition.x",
            "missing path 'workflow.triggerMessage.partition.x' "
            "(value at 'workflow.triggerMessage.partition' is a number)",
        ),
        (
            "s3.data.records.2",
            "missing path 's3.data.records.2' (index 2 out of range, the list has 2 items)",
        ),
        (
            "s3.data.records.first",
            "missing path 's3.data.records.first' (value at 's3.data.records' is a list; "
            "'first' is not an index)",
        ),
        ("nothing", "missing path 'nothing' (no key 'nothing')"),
    ],
)
def test_missing_path_names_the_full_path(path: str, message: str) -> None:
    with pytest.raises(MissingPath) as caught:
        lookup(ROOT, path)
    assert str(caught.value) == message
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("root", "reason"),
    [
        (None, "value at the root is null"),
        ("plain", "value at the root is a string that is not a JSON object or array"),
        ('"a"', "value at the root is a string that is not a JSON object or array"),
        (7, "value at the root is a number"),
        ([], "value at the root is a list; 'a' is not an index"),
    ],
)
def test_missing_path_at_the_root(root: object, reason: str) -> None:
    with pytest.raises(MissingPath) as caught:
        lookup(root, "a")
    assert str(caught.value) == f"missing path 'a' ({reason})"


def test_missing_path_can_name_the_parameter() -> None:
    error = MissingPath("workflow.x", "no key 'x'", parameter="p")
    assert str(error) == "missing path 'workflow.x' (no key 'x') in parameter 'p'"


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "a[x]", "a b", "a[0"])
def test_malformed_paths_are_value_errors(path: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        parse_path(path)


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("a", ["a"]),
        ("a.b-c.0", ["a", "b-c", "0"]),
        ('a["x.y"][3]', ["a", "x.y", "3"]),
        ("[0].a", ["0", "a"]),
    ],
)
def test_parse_path(path: str, steps: list[str]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("text", "text"),
        ('{"a": 1}', '{"a": 1}'),
        ("", ""),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (1.5, "1.5"),
        ({"a": [1, "é", None]}, '{"a":[1,"é",null]}'),
        ([], "[]"),
    ],
)
def test_render_value(value: object, rendered: str) -> None:
    assert render_value(value) == rendered


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("${workflow.triggerMessage.headers.message-id}", "m-17"),
        (
            "${workflow.triggerMessage.topic}/${workflow.triggerMessage.partition}"
            "/${workflow.triggerMessage.offset}",
            "user-behavior-topic/3/42",
        ),
        ("${workflow.triggerMessage.headers.missing:-none}", "none"),
        ("${workflow.triggerMessage.headers.missing:-}", ""),
        ("${workflow.triggerMessage.headers}", '{"message-id":"m-17","trace.id":"t-1"}'),
        ("no placeholders $HOME $[x] {a}", "no placeholders $HOME $[x] {a}"),
    ],
)
def test_render_template(template: str, rendered: str) -> None:
    context = {"workflow": {"triggerMessage": KAFKA_MESSAGE}}
    assert render_template(template, context) == rendered


def test_render_template_missing_path_without_default_raises() -> None:
    with pytest.raises(MissingPath) as caught:
        render_template("${workflow.triggerMessage.headers.message-id}", {"workflow": {}})
    assert str(caught.value) == (
        "missing path 'workflow.triggerMessage.headers.message-id' (no key 'triggerMessage')"
    )


@pytest.mark.parametrize("template", ["${}", "${a b}", "${a..b}"])
def test_render_template_rejects_malformed_placeholders(template: str) -> None:
    with pytest.raises(ValueError, match="invalid placeholder"):
        render_template(template, {"a": 1})
