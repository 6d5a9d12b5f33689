"""Node outputs, pure: parsing output files, sql rows as JSON, references and their checks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.models.workflows import WorkflowSpec
from shared.params.outputs import (
    MAX_OUTPUT_BYTES,
    OutputReference,
    OutputsError,
    ancestors,
    invalid_references,
    output_references,
    parse_outputs,
    row_outputs,
    typed_cell,
)
from shared.params.paths import MissingPath
from shared.params.resolution import ResolutionInput, resolve_parameters


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{}", {}),
        (b'{"n": 1, "s": "x", "l": [1, {"a": null}]}', {"n": 1, "s": "x", "l": [1, {"a": None}]}),
        ('{"u": "世界 ✓"}'.encode(), {"u": "世界 ✓"}),
        (b'  {"a": 1}\n', {"a": 1}),
        (b'{"a": "\\\\u0000"}', {"a": "\\u0000"}),  # a backslash and "u0000": plain text
    ],
)
def test_an_object_is_accepted(data: bytes, expected: dict[str, Any]) -> None:
    assert parse_outputs("n", data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[1, 2]", "must hold a JSON object, got an array"),
        (b'"text"', "must hold a JSON object, got a string"),
        (b"42", "must hold a JSON object, got a number"),
        (b"null", "must hold a JSON object, got null"),
        (b"true", "must hold a JSON object, got a boolean"),
        (b"", "is not valid JSON"),
        (b"{'a': 1}", "is not valid JSON"),
        (b'{"a": 1} trailing', "is not valid JSON"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b'{"a": Infinity}', "Infinity is not a JSON value"),
        (b'{"a": "\xff"}', "is not UTF-8 text"),
        (b'{"a": "\\u0000"}', "the character U+0000"),
        (b'{"\\u0000": 1}', "the character U+0000"),
        (b'{"a": ["\\ud800"]}', "an unpaired surrogate"),
        (b'{"a": "' + b"x" * MAX_OUTPUT_BYTES + b'"}', "more than the 1048576 allowed"),
    ],
)
def test_anything_else_fails_naming_the_node(data: bytes, reason: str) -> None:
    with pytest.raises(OutputsError) as caught:
        parse_outputs("extract", data)
    message = str(caught.value)
    assert message.startswith("node 'extract': $SLUICE_OUTPUT_FILE ")
    assert reason in message


def test_exactly_one_mebibyte_is_allowed() -> None:
    padding = MAX_OUTPUT_BYTES - len(b'{"a": ""}')
    data = b'{"a": "' + b"x" * padding + b'"}'
    assert len(data) == MAX_OUTPUT_BYTES
    assert len(parse_outputs("n", data)["a"]) == padding


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("int4", "42", 42),
        ("int8", "-9223372036854775808", -9223372036854775808),
        ("numeric", "12.50", "12.50"),
        ("numeric", "1000", 1000),
        ("numeric", "NaN", "NaN"),
        ("float8", "1.5", 1.5),
        ("float8", "Infinity", "Infinity"),
        ("bool", "t", True),
        ("bool", "f", False),
        ("jsonb", '{"a": [1, "x"]}', {"a": [1, "x"]}),
        ("timestamptz", "2026-12-05 07:00:00+00", "2026-12-05 07:00:00+00"),
        ("text", "'; DROP TABLE x; --", "'; DROP TABLE x; --"),
        ("text", None, None),
        ("_text", ["a", None], ["a", None]),
        ("bytea", b"\x00\xff", "AP8="),
        ("uuid", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ("date", date(2026, 1, 2), "2026-01-02"),
        ("timestamptz", datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "2026-01-02T03:04:00+00:00"),
        ("interval", timedelta(minutes=1), 60.0),
        ("numeric", Decimal("0.1"), "0.1"),
    ],
)
def test_sql_cells_become_json(type_name: str, value: object, expected: object) -> None:
    assert typed_cell(type_name, value) == expected
    json.dumps(typed_cell(type_name, value))


def test_a_first_row_is_an_object_by_column() -> None:
    assert row_outputs("load", ["n", "name"], ("3", "x"), ["int8", "text"]) == {
        "n": 3,
        "name": "x",
    }


def test_a_repeated_column_fails_naming_node_and_column() -> None:
    with pytest.raises(OutputsError, match=r"node 'load': column 'n' appears twice"):
        row_outputs("load", ["n", "n"], (1, 2))


def test_an_oversized_row_fails_naming_the_node() -> None:
    with pytest.raises(OutputsError, match=r"node 'load': the first row is \d+ bytes"):
        row_outputs("load", ["big"], ("x" * MAX_OUTPUT_BYTES,), ["text"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo ${nodes.a.outputs.n}", [OutputReference("nodes.a.outputs.n", "a", "n")]),
        ("${nodes.a.outputs}", [OutputReference("nodes.a.outputs", "a", None)]),
        (
            '${nodes["x.y"].outputs.list[0].k:-d}',
            [OutputReference('nodes["x.y"].outputs.list[0].k', "x.y", "list.0.k")],
        ),
        ("${nodes.a.rows}", [OutputReference("nodes.a.rows", None, None)]),
        ("${nodes.a}", [OutputReference("nodes.a", None, None)]),
        ("$nodes ${node.name} ${nodesx.a.outputs.b} ${NODES}", []),
        ("${nodes.a.outputs.b:ident}", [OutputReference("nodes.a.outputs.b", "a", "b")]),
    ],
)
def test_references_are_found(text: str, expected: list[OutputReference]) -> None:
    assert output_references([text]) == expected


UPSTREAM = {"a": [], "b": ["a"], "c": ["b"], "d": []}


def test_ancestors_are_transitive() -> None:
    assert ancestors(UPSTREAM, "c") == {"a", "b"}
    assert ancestors(UPSTREAM, "a") == set()


@pytest.mark.parametrize(
    ("node", "text", "problem"),
    [
        ("c", "${nodes.a.outputs.x} ${nodes.b.outputs.y}", None),
        ("c", "${nodes.d.outputs.x}", "node 'd', which is not upstream of 'c'"),
        ("a", "${nodes.c.outputs.x}", "node 'c', which is not upstream of 'a'"),
        ("c", "${nodes.c.outputs.x}", "node 'c', which is not upstream of 'c'"),
        ("c", "${nodes.zz.outputs.x}", "node 'zz', which is not a node of this workflow"),
        ("c", "${nodes.b.output.x}", "must have the form ${nodes.<node>.outputs.<path>}"),
    ],
)
def test_only_ancestors_may_be_referenced(node: str, text: str, problem: str | None) -> None:
    problems = invalid_references(node, [text], UPSTREAM)
    if problem is None:
        assert problems == []
    else:
        [message] = problems
        assert problem in message


def spec(nodes: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"name": "wf", "type": "manual", "nodes": nodes, **kw}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            spec(
                [
                    {"name": "a", "type": "shell", "code": "true"},
                    {"name": "b", "type": "sql", "connection": "pg", "code": "SELECT 1"},
                    {
                        "name": "c",
                        "type": "python",
                        "upstream": ["b"],
                        "code": "print(${nodes.a.outputs.x})",
                    },
                ]
            ),
            "nodes.2.code: ${nodes.a.outputs.x} reads the outputs of node 'a', which is not "
            "upstream of 'c'",
        ),
        (
            spec(
                [
                    {"name": "a", "type": "shell", "code": "true"},
                    {
                        "name": "b",
                        "type": "check",
                        "check": {
                            "kind": "sql",
                            "connection": "pg",
                            "query": "SELECT ${nodes.b.outputs.x}",
                        },
                    },
                ]
            ),
            "nodes.1.check.query: ${nodes.b.outputs.x}",
        ),
        (
            spec([{"name": "a", "type": "shell", "code": "true"}], parameters={"p": "${nodes.a}"}),
            "parameters.p: node outputs can only be read in a node's own parameters or code",
        ),
        (
            spec([{"name": "a", "type": "shell", "code": "true", "parameters": {"nodes": "x"}}]),
            "parameter name 'nodes' is reserved",
        ),
    ],
)
def test_workflow_specs_refuse_bad_references(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkflowSpec.model_validate(data)
    assert expected in str(caught.value)


CYCTIME = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


def resolve(outputs: dict[str, dict[str, Any]], params: dict[str, Any] | None = None) -> Any:
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=CYCTIME,
            workflow_name="wf",
            instance_id=1,
            version=1,
            node_name="c",
            node_params=params or {},
            node_outputs=outputs,
        )
    )


UP: dict[str, dict[str, Any]] = {
    "a": {"n": 3, "s": "x", "obj": {"k": [1, 2]}, "raw": '{"j": 5}'},
    "a.b": {"z": 1},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nodes.a.outputs.n", "3"),
        ("nodes.a.outputs.s", "x"),
        ("nodes.a.outputs.obj", '{"k":[1,2]}'),
        ("nodes.a.outputs.obj.k[1]", "2"),
        ("nodes.a.outputs.raw.j", "5"),  # a string holding JSON is parsed, as everywhere
        ('nodes["a.b"].outputs.z', "1"),
        ("nodes.a.outputs", '{"n":3,"s":"x","obj":{"k":[1,2]},"raw":"{\\"j\\": 5}"}'),
    ],
)
def test_outputs_resolve_with_the_usual_path_rules(path: str, expected: str) -> None:
    resolution = resolve(UP)
    assert resolution.resolvable(path)
    assert resolution.resolve(path) == expected


def test_a_missing_output_names_the_path() -> None:
    resolution = resolve(UP)
    with pytest.raises(MissingPath, match=r"'nodes.a.outputs.absent'.*no key 'absent'"):
        resolution.resolve("nodes.a.outputs.absent")
    assert resolution.resolve("nodes.a.outputs.absent", "fallback") == "fallback"
    with pytest.raises(MissingPath, match=r"'nodes.gone.outputs.x'"):
        resolution.resolve("nodes.gone.outputs.x")


def test_node_parameters_may_hold_outputs() -> None:
    resolution = resolve(UP, {"rows": "${nodes.a.outputs.n}", "label": "n=${nodes.a.outputs.n}"})
    assert resolution.params == {"rows": 3, "label": "n=3"}
    with pytest.raises(MissingPath) as caught:
        resolve(UP, {"p": "${nodes.a.outputs.nope}"})
    assert "'nodes.a.outputs.nope'" in str(caught.value) and "parameter 'p'" in str(caught.value)
