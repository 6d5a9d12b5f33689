"""The Kafka listener's pure parts, table-driven: record → event, settings, errors, CLI input.

No I/O (this module sits with the listener's other tests; nothing here needs a server).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from services.kafka_listener.commands import (
    DEV_KAFKA_PORT,
    InputError,
    parse_headers,
    producer_settings,
    read_value,
)
from services.kafka_listener.messages import UnstorableMessage, trigger_message
from services.kafka_listener.records import record_size, to_event
from shared.kafka.admission import describe, is_transient
from shared.kafka.config import (
    client_options,
    describe_connection,
    load_listener_settings,
)
from shared.kafka.retry import Backoff
from shared.settings import KafkaSettings, SettingsError

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
T = 1_767_225_600_123


@dataclass(frozen=True)
class Record:
    value: bytes | None = b"v"
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "orders"
    partition: int = 3
    offset: int = 42
    timestamp: int = T


@pytest.mark.parametrize(
    ("record", "limit", "error", "value"),
    [
        (Record(b'{"a": 1}'), 100, None, '{"a": 1}'),
        (Record(b"x" * 100), 100, None, "x" * 100),  # exactly at the limit
        (Record(b"x" * 101), 100, "message is 101 bytes", None),
        (Record(b"x" * 90, key=b"k" * 11), 100, "message is 101 bytes", None),
        (Record(b"x" * 90, headers=[("h", b"y" * 10)]), 100, "message is 101 bytes", None),
        (Record(None, key=b"k"), 100, None, None),  # a tombstone is a message without value
        (Record(b"\xff\xfe"), 100, None, base64.b64encode(b"\xff\xfe").decode()),
        (Record(b"a\x00b"), 100, None, base64.b64encode(b"a\x00b").decode()),
        (Record(b"v", headers=[("bad\x00name", b"v")]), 100, "header name", None),
    ],
)
def test_a_record_becomes_one_event(
    record: Record, limit: int, error: str | None, value: str | None
) -> None:
    event = to_event(record, NOW, limit)
    assert (event.source, event.subject, event.ref) == ("kafka", "orders", "orders/3/42")
    assert event.received_at == NOW
    if error is None:
        assert event.error is None
        assert event.message is not None
        assert event.message["value"] == value
        assert (event.message["topic"], event.message["partition"]) == ("orders", 3)
        assert (event.message["offset"], event.message["timestamp_ms"]) == (42, T)
    else:
        assert event.error is not None
        assert error in event.error
        assert event.message is None


def test_an_over_size_event_keeps_the_start_of_the_value_for_the_audit() -> None:
    limit = 1 << 20
    event = to_event(Record(b"\x00" + b"y" * limit), NOW, limit)
    assert event.raw is not None
    assert event.raw.startswith("\ufffdyyy")  # U+0000 cannot be stored in jsonb
    assert len(event.raw) == limit + 1  # one past the stored maximum: intake flags truncation
    assert "SLUICE_KAFKA_MAX_MESSAGE_BYTES" in (event.error or "")


@pytest.mark.parametrize(
    ("headers", "size"),
    [([], 3), ([("ab", b"cd")], 7), ([("é", b"")], 5), ([("a", b"1"), ("a", b"2")], 7)],
)
def test_record_size_counts_key_value_and_headers(
    headers: list[tuple[str, bytes]], size: int
) -> None:
    assert record_size(Record(b"vv", key=b"k", headers=headers)) == size


@pytest.mark.parametrize(
    ("headers", "expected", "encodings"),
    [
        ([("h", b"a\x00b")], {"h": base64.b64encode(b"a\x00b").decode()}, {"h": "base64"}),
        ([("h", b"a\x00b"), ("h", b"ok")], {"h": "ok"}, None),
        ([("h", b"fine")], {"h": "fine"}, None),
    ],
)
def test_nul_as_binary_encodes_header_values_too(
    headers: list[tuple[str, bytes]], expected: dict[str, str], encodings: dict[str, str] | None
) -> None:
    message = trigger_message("t", 0, 0, T, None, b"v", headers, nul_as_binary=True)
    assert message["headers"] == expected
    assert message.get("header_encodings") == encodings


def test_nul_in_a_header_name_cannot_be_stored() -> None:
    with pytest.raises(UnstorableMessage, match="U\\+0000"):
        trigger_message("t", 0, 0, T, None, b"v", [("a\x00", b"v")], nul_as_binary=True)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.ConnectionDoesNotExistError("closed"), True),
        (asyncpg.exceptions.AdminShutdownError("shutting down"), True),
        (asyncpg.exceptions.CannotConnectNowError("starting"), True),
        (asyncpg.exceptions.TooManyConnectionsError("full"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.SerializationError("retry"), True),
        (asyncpg.exceptions.UntranslatableCharacterError("\\u0000"), False),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (asyncpg.exceptions.UndefinedTableError("no table"), False),
        (ValueError("bad"), False),
        (RecursionError(), False),
    ],
)
def test_transient_errors_are_those_of_the_server_or_connection(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad"), "ValueError: bad"),
        (ValueError("a\x00b"), "ValueError: a\ufffdb"),
        (ValueError("x" * 5000), "ValueError: " + "x" * 1987 + "…"),
    ],
)
def test_describe_is_one_bounded_storable_line(exc: BaseException, expected: str) -> None:
    assert describe(exc) == expected


@pytest.mark.parametrize(
    ("maximum", "delays"),
    [(30, [0.5, 1, 2, 4, 8, 16, 30, 30]), (1, [0.5, 1, 1]), (0.2, [0.2, 0.2])],
)
def test_backoff_doubles_up_to_its_maximum(maximum: float, delays: list[float]) -> None:
    backoff = Backoff(maximum)
    assert [backoff.next() for _ in delays] == delays
    backoff.reset()
    assert backoff.next() == delays[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLUICE_KAFKA_SESSION_TIMEOUT_MS": "10"}, "SLUICE_KAFKA_SESSION_TIMEOUT_MS"),
        ({"SLUICE_KAFKA_IN_FLIGHT_BATCHES": "0"}, "SLUICE_KAFKA_IN_FLIGHT_BATCHES"),
        ({"SLUICE_KAFKA_MAX_MESSAGE_BYTES": "many"}, "SLUICE_KAFKA_MAX_MESSAGE_BYTES"),
        ({"SLUICE_KAFKA_FAULT_KILL_AFTER_ADMIT": "0"}, "SLUICE_KAFKA_FAULT_KILL_AFTER_ADMIT"),
        (
            {
                "SLUICE_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS": "2000",
            },
            "heartbeat_interval_ms must be below session_timeout_ms",
        ),
    ],
)
def test_bad_listener_settings_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_listener_settings()


@pytest.mark.parametrize(
    "heartbeat", ["SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS", "SLUICE_KAFKA_HEARTBEAT_MS"]
)
def test_listener_settings_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, heartbeat: str
) -> None:
    monkeypatch.setenv("SLUICE_KAFKA_SESSION_TIMEOUT_MS", "2000")
    monkeypatch.setenv(heartbeat, "100")
    monkeypatch.setenv("SLUICE_KAFKA_FAULT_KILL_AFTER_ADMIT", "3")
    settings = load_listener_settings()
    assert (settings.session_timeout_ms, settings.heartbeat_interval_ms) == (2000, 100)
    assert settings.fault_kill_after_admit == 3
    assert load_listener_settings(max_message_bytes=10).max_message_bytes == 10


def kafka(**values: Any) -> KafkaSettings:
    return KafkaSettings(**{"kafka_bootstrap": "b1:9092, b2:9092", **values})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"bootstrap_servers": ["b1:9092", "b2:9092"], "security_protocol": "PLAINTEXT"}),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
                "kafka_sasl_username": "svc",
                "kafka_sasl_password": SecretStr("hunter2"),
            },
            {
                "bootstrap_servers": ["b1:9092", "b2:9092"],
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_plain_username": "svc",
                "sasl_plain_password": "hunter2",
            },
        ),
    ],
)
def test_client_options_carry_the_connection_settings(
    values: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert client_options(kafka(**values)) == expected


def test_ssl_builds_a_tls_context() -> None:
    options = client_options(kafka(kafka_security_protocol="SSL"))
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_bootstrap": ""}, "SLUICE_KAFKA_BOOTSTRAP: must be set"),
        ({"kafka_security_protocol": "SASL_SSL"}, "SLUICE_KAFKA_SASL_MECHANISM"),
    ],
)
def test_incomplete_connection_settings_fail_naming_the_variable(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        client_options(kafka(**values))


def test_the_connection_description_never_holds_the_password() -> None:
    settings = kafka(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("hunter2"),
    )
    described = describe_connection(settings)
    assert "hunter2" not in repr(described)
    assert described["sasl_mechanism"] == "PLAIN"


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], []),
        (["message-id=m-1"], [("message-id", b"m-1")]),
        (["a=1", "a=2"], [("a", b"1"), ("a", b"2")]),
        (["eq=a=b"], [("eq", b"a=b")]),
        (["empty="], [("empty", b"")]),
    ],
)
def test_headers_are_name_value_pairs_in_order(
    items: list[str], expected: list[tuple[str, bytes]]
) -> None:
    assert parse_headers(items) == expected


@pytest.mark.parametrize("item", ["novalue", "=v"])
def test_a_header_without_name_or_equals_is_bad_input(item: str) -> None:
    with pytest.raises(InputError):
        parse_headers([item])


def test_values_come_from_text_files_or_stdin(tmp_path: Path) -> None:
    path = tmp_path / "event.bin"
    path.write_bytes(b"\x00\xffraw")
    assert read_value('{"a": 1}') == b'{"a": 1}'
    assert read_value(f"@{path}") == b"\x00\xffraw"
    assert read_value("@-", io.BytesIO(b"piped")) == b"piped"
    with pytest.raises(InputError, match="missing"):
        read_value(f"@{tmp_path / 'missing'}")


@pytest.mark.parametrize(
    ("env", "flag", "bootstrap"),
    [
        ({}, None, f"127.0.0.1:{DEV_KAFKA_PORT}"),
        ({"SLUICE_DEV_KAFKA_PORT": "29092"}, None, "127.0.0.1:29092"),
        ({"SLUICE_KAFKA_BOOTSTRAP": "kafka:9092"}, None, "kafka:9092"),
        ({"SLUICE_KAFKA_BOOTSTRAP": "kafka:9092"}, "other:9092", "other:9092"),
    ],
)
def test_produce_uses_the_configured_brokers_else_the_dev_broker(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flag: str | None, bootstrap: str
) -> None:
    for name in ("SLUICE_KAFKA_BOOTSTRAP", "SLUICE_DEV_KAFKA_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert producer_settings(flag).kafka_bootstrap == bootstrap
