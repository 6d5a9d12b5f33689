"""trigger_message and filter_view: the Kafka trigger message and what filters see."""

from __future__ import annotations

import base64
import json
from typing import Any

import jmespath
import pytest

from services.kafka_listener.messages import trigger_message
from shared.matching import filter_view

T = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def message(
    key: bytes | None = b"k",
    value: bytes | None = b"v",
    headers: list[tuple[str, bytes | None]] | None = None,
    timestamp_ms: int | None = T,
) -> dict[str, Any]:
    return trigger_message("user-behavior-topic", 2, 42, timestamp_ms, key, value, headers or [])


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_full_message() -> None:
    assert message(b"some-key", b'{"action_type": "login"}', [("message-id", b"m-1")]) == {
        "topic": "user-behavior-topic",
        "partition": 2,
        "offset": 42,
        "timestamp": "2026-01-01T00:00:00.123Z",
        "timestamp_ms": T,
        "key": "some-key",
        "value": '{"action_type": "login"}',
        "headers": {"message-id": "m-1"},
    }


@pytest.mark.parametrize(
    ("raw", "text", "flagged"),
    [
        (None, None, False),
        (b"", "", False),
        (b"plain", "plain", False),
        ("ключ ✓ 🔑".encode(), "ключ ✓ 🔑", False),
        (b"\x00nul inside", "\x00nul inside", False),
        (b"\xff\xfe", b64(b"\xff\xfe"), True),
        (b"caf\xe9", b64(b"caf\xe9"), True),  # Latin-1, not UTF-8
        (b"\xed\xa0\x80", b64(b"\xed\xa0\x80"), True),  # an encoded surrogate is not UTF-8
        (b"ok\xc3", b64(b"ok\xc3"), True),  # truncated multi-byte sequence
    ],
)
@pytest.mark.parametrize("field", ["key", "value"])
def test_key_and_value_are_utf8_or_flagged_base64(
    field: str, raw: bytes | None, text: str | None, flagged: bool
) -> None:
    built = message(key=raw) if field == "key" else message(value=raw)
    assert built[field] == text
    if flagged:
        assert built[f"{field}_encoding"] == "base64"
        assert base64.b64decode(built[field]) == raw
    else:
        assert f"{field}_encoding" not in built


def test_other_field_is_not_flagged_by_one_base64_field() -> None:
    built = message(key=b"\xff", value=b"fine")
    assert built["key_encoding"] == "base64"
    assert "value_encoding" not in built


@pytest.mark.parametrize(
    ("headers", "expected", "encodings"),
    [
        ([], {}, None),
        ([("message-id", b"m-1")], {"message-id": "m-1"}, None),
        ([("a", b"1"), ("b", b"")], {"a": "1", "b": ""}, None),
        ([("h", b"first"), ("h", b"second")], {"h": "second"}, None),  # last wins
        ([("bin", b"\xff\x00")], {"bin": b64(b"\xff\x00")}, {"bin": "base64"}),
        ([("h", b"\xff"), ("h", b"text")], {"h": "text"}, None),  # flag goes with the value
        ([("h", b"text"), ("h", b"\xff")], {"h": b64(b"\xff")}, {"h": "base64"}),
        ([("none", None)], {"none": None}, None),
        ([("заголовок", "✓".encode())], {"заголовок": "✓"}, None),
    ],
)
def test_headers_are_an_object_of_strings(
    headers: list[tuple[str, bytes | None]],
    expected: dict[str, str | None],
    encodings: dict[str, str] | None,
) -> None:
    built = message(headers=headers)
    assert built["headers"] == expected
    assert built.get("header_encodings") == encodings


@pytest.mark.parametrize(
    ("timestamp_ms", "iso", "kept_ms"),
    [
        (T, "2026-01-01T00:00:00.123Z", T),
        (0, "1970-01-01T00:00:00.000Z", 0),
        (1, "1970-01-01T00:00:00.001Z", 1),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z", 253_402_300_799_999),
        (253_402_300_800_000, None, 253_402_300_800_000),  # past year 9999
        (2**63 - 1, None, 2**63 - 1),
        (-1, None, None),  # Kafka's "no timestamp"
        (None, None, None),
    ],
)
def test_timestamp_is_iso_utc_and_milliseconds(
    timestamp_ms: int | None, iso: str | None, kept_ms: int | None
) -> None:
    built = message(timestamp_ms=timestamp_ms)
    assert (built["timestamp"], built["timestamp_ms"]) == (iso, kept_ms)


def test_message_is_json_serialisable() -> None:
    built = message(b"\xff", b"\x00\xff", [("bin", b"\xfe"), ("none", None)])
    assert json.loads(json.dumps(built)) == built


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"action_type": "login", "n": 1}', {"action_type": "login", "n": 1}),
        (b"[1, 2]", [1, 2]),
        (b"42", 42),
        (b'"quoted"', "quoted"),
        (b"null", None),
        (b"true", True),
        (b'  {"a": 1}\n', {"a": 1}),
        (b"plain text", "plain text"),
        (b"", ""),
        (b"{broken", "{broken"),
        (b"NaN", "NaN"),  # not strict JSON
        (b'{"x": Infinity}', '{"x": Infinity}'),
        (None, None),
    ],
)
def test_filter_view_parses_a_json_value(value: bytes | None, expected: Any) -> None:
    built = message(value=value)
    view = filter_view(built)
    assert view["value"] == expected
    assert {k: v for k, v in view.items() if k != "value"} == {
        k: v for k, v in built.items() if k != "value"
    }


def test_filter_view_leaves_a_base64_value_alone() -> None:
    # These bytes are not UTF-8 and their base64 text, "1234", would parse as the JSON number 1234.
    built = message(value=base64.b64decode("1234"))
    assert built["value"] == "1234"
    assert filter_view(built)["value"] == "1234"


def test_filter_view_does_not_change_the_message() -> None:
    built = message(value=b'{"a": 1}', headers=[("h", b"1")])
    snapshot = json.dumps(built, sort_keys=True)
    view = filter_view(built)
    view["headers"]["h"] = "changed"
    assert json.dumps(built, sort_keys=True) == snapshot
    assert built["value"] == '{"a": 1}'


@pytest.mark.parametrize(
    ("expression", "value", "key", "truthy"),
    [
        ("value.action_type == 'login'", b'{"action_type": "login"}', b"k", True),
        ("value.action_type == 'login'", b'{"action_type": "logout"}', b"k", False),
        ("value.action_type == 'login'", b"not json", b"k", False),
        ("value.amount > `100`", b'{"amount": 250}', b"k", True),
        ("key == 'some-key'", b"x", b"some-key", True),
        ("headers.source == 'web'", b"x", b"k", True),
        ("contains(value.tags, 'vip')", b'{"tags": ["new", "vip"]}', b"k", True),
    ],
)
def test_filters_evaluate_on_the_view(
    expression: str, value: bytes, key: bytes, truthy: bool
) -> None:
    view = filter_view(message(key=key, value=value, headers=[("source", b"web")]))
    assert bool(jmespath.search(expression, view)) is truthy
