"""The API's pure helpers, table-driven: spec diffs, error field paths, cursors, CLI parsing.

No I/O here; these sit with the API tests because the files they cover belong to the API.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from services.api import commands, diff, pagination
from services.api.errors import ApiError, describe_validation_error
from shared.client.commands import UsageError, table

NODE_A = {"name": "a", "type": "shell", "code": "x", "upstream": []}
NODE_B = {"name": "b", "type": "shell", "code": "y", "upstream": ["a"]}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [("a", "changed", 1, 2)]),
        ({"a": 1}, {}, [("a", "removed", 1, None)]),
        ({}, {"p": {"x": 1}}, [("p", "added", None, {"x": 1})]),
        ({"p": {"x": 1, "y": 2}}, {"p": {"x": 1, "y": 3}}, [("p.y", "changed", 2, 3)]),
        ({"a": 1}, {"a": True}, [("a", "changed", 1, True)]),
        ({"a": None}, {"a": "x"}, [("a", "changed", None, "x")]),
        ({"l": [1, 2]}, {"l": [2, 1]}, [("l", "changed", [1, 2], [2, 1])]),
        # nodes are matched by name: reordering is no change, an insert is one addition
        ({"nodes": [NODE_A, NODE_B]}, {"nodes": [NODE_B, NODE_A]}, []),
        ({"nodes": [NODE_A]}, {"nodes": [NODE_B, NODE_A]}, [("nodes[b]", "added", None, NODE_B)]),
        ({"nodes": [NODE_A, NODE_B]}, {"nodes": [NODE_A]}, [("nodes[b]", "removed", NODE_B, None)]),
        (
            {"nodes": [NODE_A, NODE_B]},
            {"nodes": [NODE_A, {**NODE_B, "upstream": []}]},
            [("nodes[b].upstream", "changed", ["a"], [])],
        ),
        # duplicate names: no key to match on, the list is compared whole
        (
            {"l": [{"name": "x"}, {"name": "x"}]},
            {"l": [{"name": "x"}]},
            [("l", "changed", [{"name": "x"}, {"name": "x"}], [{"name": "x"}])],
        ),
    ],
)
def test_spec_changes(
    old: dict[str, Any], new: dict[str, Any], expected: list[tuple[str, str, Any, Any]]
) -> None:
    got = [(c.path, c.op, c.old, c.new) for c in diff.spec_changes(old, new)]
    assert got == expected


def test_unified_diff_is_empty_for_equal_specs_and_labelled_otherwise() -> None:
    assert diff.unified({"a": 1}, {"a": 1}, "v1", "v2") == ""
    text = diff.unified({"a": 1, "b": [1]}, {"a": 2, "b": [1]}, "wf@v1", "wf@v2")
    assert text.splitlines()[:2] == ["--- wf@v1", "+++ wf@v2"]
    assert '-  "a": 1,' in text and '+  "a": 2,' in text


CHECK_NODE = {"name": "c", "type": "check", "check": {"kind": "sql", "connection": "x"}}


@pytest.mark.parametrize(
    ("error", "body", "expected"),
    [
        (
            {"loc": ("body",), "msg": "Value error, nodes.1.upstream: unknown node 'z'"},
            {},
            ("nodes.1.upstream", "unknown node 'z'"),
        ),
        (
            {"loc": ("body", "nodes", 0, "shell", "code"), "msg": "Field required"},
            {"nodes": [{"name": "a", "type": "shell"}]},
            ("nodes.0.code", "Field required"),
        ),
        (
            {
                "loc": ("body", "nodes", 0, "check", "check", "sql", "query"),
                "msg": "Field required",
            },
            {"nodes": [CHECK_NODE]},
            ("nodes.0.check.query", "Field required"),
        ),
        (
            {"loc": ("body", "schedule"), "msg": "Value error, cron: bad cron"},
            {"schedule": {"cron": "x"}},
            ("schedule.cron", "bad cron"),
        ),
        (
            {"loc": ("body", "kafka", "topic"), "msg": "Field required"},
            {"type": "kafka"},
            ("topic", "Field required"),
        ),
        (
            {"loc": ("body", "kafka", "filter"), "msg": "Value error, invalid JMESPath: x: y"},
            {"type": "kafka"},
            ("filter", "invalid JMESPath: x: y"),
        ),
        ({"loc": ("query", "limit"), "msg": "too big"}, None, ("limit", "too big")),
        ({"loc": ("path", "version"), "msg": "bad"}, None, ("version", "bad")),
        (
            {"loc": ("body",), "msg": "Field required", "type": "missing"},
            None,
            (
                "body",
                "a JSON request body is required",
            ),
        ),
        (
            {
                "loc": ("body", 3),
                "msg": "JSON decode error",
                "type": "json_invalid",
                "ctx": {"error": "Expecting value"},
            },
            None,
            ("body", "invalid JSON: Expecting value"),
        ),
        (
            {"loc": ("body",), "msg": "Input should be an object", "input": b"raw"},
            b"raw",
            ("body", "the body must be JSON sent with Content-Type: application/json"),
        ),
    ],
)
def test_validation_errors_name_the_field_the_user_wrote(
    error: dict[str, Any], body: Any, expected: tuple[str, str]
) -> None:
    assert describe_validation_error(error, body) == expected


@pytest.mark.parametrize("key", [1, 2**62, "a", "name.with-dots_1"])
def test_cursors_round_trip(key: int | str) -> None:
    cursor = pagination.encode(key)
    decoded = (
        pagination.decode_id(cursor) if isinstance(key, int) else pagination.decode_name(cursor)
    )
    assert decoded == key


@pytest.mark.parametrize(
    ("cursor", "decode"),
    [
        ("!!!", pagination.decode_id),
        (pagination.encode("name"), pagination.decode_id),
        (pagination.encode(5), pagination.decode_name),
        ("eDox", pagination.decode_id),  # "x:1"
        (pagination.encode(2**63).replace("=", ""), pagination.decode_id),
    ],
)
def test_foreign_cursors_are_422(cursor: str, decode: Any) -> None:
    with pytest.raises(ApiError) as info:
        decode(cursor)
    assert (info.value.status, info.value.field) == (422, "cursor")


@pytest.mark.parametrize(
    ("items", "cursor_after", "limit", "page", "more"),
    [
        (["b", "a", "c"], None, 2, ["a", "b"], True),
        (["b", "a", "c"], "b", 2, ["c"], False),
        (["a_b", "ab", "a.b"], None, 5, ["a.b", "a_b", "ab"], False),
        ([], None, 3, [], False),
    ],
)
def test_page_sorted(
    items: list[str], cursor_after: str | None, limit: int, page: list[str], more: bool
) -> None:
    cursor = pagination.encode(cursor_after) if cursor_after else None
    got, nxt = pagination.page_sorted(items, lambda s: s, cursor, limit)
    assert got == page
    assert (nxt is not None) == more


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"name": "a", "type": "kafka", "topic": "t"}', ["a"]),
        ('[{"name": "a"}, {"name": "b"}]', ["a", "b"]),
        ("name: a\ntype: s3\n---\nname: b\n---\n", ["a", "b"]),
        ("- name: a\n- name: b\n---\n- name: c\n", ["a", "b", "c"]),
    ],
)
def test_load_specs_reads_json_yaml_lists_and_streams(text: str, names: list[str]) -> None:
    assert [s["name"] for s in commands.load_specs(text, "f")] == names


def test_load_specs_turns_yaml_timestamps_back_into_strings() -> None:
    text = "name: w\nschedule:\n  start_at: 2026-12-01T00:00:00+08:00\n  day: 2026-12-01\n"
    spec = commands.load_specs(text, "f")[0]
    assert spec["schedule"] == {"start_at": "2026-12-01T00:00:00+08:00", "day": "2026-12-01"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no specs found"),
        ("[1, 2]", "every spec must be an object"),
        ("type: kafka\n", "a spec has no 'name'"),
        ("a: [unclosed", "neither JSON nor YAML"),
    ],
)
def test_load_specs_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        commands.load_specs(text, "f")


@pytest.mark.parametrize(
    ("saved", "action"),
    [
        (
            {"created": True, "new_version": True, "published": True, "version": 1},
            "created (v1), published",
        ),
        ({"created": True, "new_version": True, "published": False, "version": 1}, "created (v1)"),
        ({"created": False, "new_version": True, "published": False, "version": 3}, "updated (v3)"),
        (
            {"created": False, "new_version": True, "published": True, "version": 3},
            "updated (v3), published",
        ),
        (
            {"created": False, "new_version": False, "published": True, "version": 2},
            "published (v2)",
        ),
        ({"created": False, "new_version": False, "published": False, "version": 2}, "unchanged"),
    ],
)
def test_apply_reports_what_changed(saved: dict[str, Any], action: str) -> None:
    assert commands._workflow_action(saved) == action


def test_tables_align_and_never_leave_a_cell_empty() -> None:
    out = io.StringIO()
    table(
        [
            (
                1,
                "wf",
                None,
                True,
                "2026-11-21T03:45:52.123Z",
                "detail: xxThen more words, long enough",
            )
        ],
        ("ID", "NAME", "EMPTY", "FLAG", "AT", "DETAIL"),
        out,
    )
    header, row = out.getvalue().splitlines()
    cells = ["1", "wf", "-", "yes", "2026-11-21", "03:45:52"]
    assert row.split() == [*cells, *"detail: xxThen more words, long enough".split()]
    assert header.index("NAME") == row.index("wf")
