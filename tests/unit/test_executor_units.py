"""Pure parts of the executor: log buffering, prepare, connection parameters, small rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError
from pydantic import TypeAdapter

from services.executor.claims import ClaimedNode
from services.executor.config import ExecutorConfig
from services.executor.leases import must_self_fence
from services.executor.logs import LogBuffer
from services.executor.prepare import TRIGGER_MESSAGE_VAR, AnyNode, node_code, prepare
from services.executor.runners.check import is_missing, truthy
from services.executor.runners.connect import (
    ConnectionConfigError,
    postgres_params,
    s3_params,
)
from services.executor.runners.process import exit_status
from services.executor.runners.shell import is_noop
from services.executor.runners.sql import format_rows
from services.executor.runners.sync import qualified, split_table
from shared.db.connections import ResolvedConnection
from shared.settings import load_settings

NODE = TypeAdapter(AnyNode)


def drain(buffer: LogBuffer) -> str:
    return "".join(text for _, text in buffer.take())


@pytest.mark.parametrize(
    ("feeds", "expected"),
    [
        ([b"hello\n", b"world\n"], "hello\nworld\n"),
        # A UTF-8 sequence split across two reads stays one character.
        ([b"caf\xc3", b"\xa9\n"], "café\n"),
        ([b"bad \xff byte\n"], "bad \ufffd byte\n"),
        ([b"nul\x00here"], "nul\ufffdhere"),
        ([b""], ""),
    ],
)
def test_log_buffer_decodes_what_it_is_fed(feeds: list[bytes], expected: str) -> None:
    buffer = LogBuffer(cap_bytes=1000)
    for data in feeds:
        buffer.feed(data)
    assert drain(buffer) == expected


@pytest.mark.parametrize(
    ("cap", "feeds", "expected", "discarded"),
    [
        (5, [b"12345"], "12345", 0),
        (5, [b"123", b"456", b"789"], "12345\n[sluice] log truncated at 5 bytes\n", 4),
        (3, [b"\xc3\xa9\xc3\xa9"], "é\ufffd\n[sluice] log truncated at 3 bytes\n", 1),
        (0, [b"x"], "[sluice] log truncated at 0 bytes\n", 1),
    ],
)
def test_log_buffer_caps_with_a_marker(
    cap: int, feeds: list[bytes], expected: str, discarded: int
) -> None:
    buffer = LogBuffer(cap_bytes=cap)
    for data in feeds:
        buffer.feed(data)
    assert drain(buffer) == expected
    assert buffer.discarded_bytes == discarded
    buffer.feed(b"more")
    assert buffer.discarded_bytes == discarded + 4
    # Only the first byte over the cap adds the marker.
    assert drain(buffer) == ("" if discarded else f"\n[sluice] log truncated at {cap} bytes\n")


def test_log_buffer_close_reports_discarded_bytes_once() -> None:
    buffer = LogBuffer(cap_bytes=2)
    buffer.feed(b"abcdef")
    buffer.close()
    buffer.close()
    assert drain(buffer) == (
        "ab\n[sluice] log truncated at 2 bytes\n[sluice] 4 more bytes of output were discarded\n"
    )


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (b"", "[sluice] done\n"),
        (b"line\n", "line\n[sluice] done\n"),
        (b"partial", "partial\n[sluice] done\n"),
    ],
)
def test_log_buffer_notes_start_on_their_own_line(before: bytes, expected: str) -> None:
    buffer = LogBuffer(cap_bytes=100)
    buffer.feed(before)
    buffer.note("done")
    assert drain(buffer) == expected


def test_log_buffer_notes_a_line_after_an_earlier_partial_chunk() -> None:
    buffer = LogBuffer(cap_bytes=100)
    buffer.feed(b"no newline")
    assert drain(buffer) == "no newline"
    buffer.note("exit code 1")
    assert drain(buffer) == "\n[sluice] exit code 1\n"


def test_log_buffer_numbers_chunks_across_takes() -> None:
    buffer = LogBuffer(cap_bytes=100, chunk_chars=4)
    buffer.feed(b"abcdefghij")
    assert buffer.take() == [(1, "abcd"), (2, "efgh"), (3, "ij")]
    assert buffer.take() == []
    buffer.feed(b"k")
    assert buffer.take() == [(4, "k")]
    assert buffer.pending_chars == 0


def claimed(**over: Any) -> ClaimedNode:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    values: dict[str, Any] = {
        "node_id": 7,
        "attempt_id": 70,
        "name": "n",
        "type": "shell",
        "attempt": 2,
        "lease_token": uuid4(),
        "timeout_s": None,
        "resource_group": "default",
        "is_root": True,
        "ready_at": now,
        "claimed_at": now,
        "instance_id": 42,
        "workspace_id": 1,
        "workflow_id": 3,
        "workflow": "wf",
        "workflow_type": "triggered",
        "version": 1,
        "kind": "triggered",
        "cyctime": now,
        "bizdate": None,
        "parameters": {},
        "trigger_message": {"key": "in/é.csv", "n": [1, 2]},
        "event_received_at": None,
    }
    values.update(over)
    return ClaimedNode(**values)


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"type": "shell", "code": "echo ${x}"}, "echo ${x}"),
        ({"type": "python", "code": "print(1)"}, "print(1)"),
        ({"type": "sql", "code": "SELECT 1", "connection": "db"}, "SELECT 1"),
        (
            {"type": "check", "check": {"kind": "sql", "connection": "db", "query": "SELECT 2"}},
            "SELECT 2",
        ),
        ({"type": "check", "check": {"kind": "s3_object", "bucket": "b", "key": "k"}}, ""),
        (
            {
                "type": "sync",
                "sync": {
                    "kind": "postgres_to_s3",
                    "connection": "db",
                    "query": "SELECT 3",
                    "bucket": "b",
                    "key": "k",
                },
            },
            "SELECT 3",
        ),
        (
            {
                "type": "sync",
                "sync": {
                    "kind": "s3_to_postgres",
                    "connection": "db",
                    "table": "t",
                    "bucket": "b",
                    "key": "k",
                },
            },
            "",
        ),
    ],
)
def test_prepare_gives_every_node_its_variables_and_message(
    spec: dict[str, Any], code: str
) -> None:
    node = NODE.validate_python({"name": "n", **spec})
    assert node_code(node) == code
    prepared = prepare(node, claimed(), 2)
    assert prepared.code == code
    assert prepared.env == {
        "SLUICE_INSTANCE_ID": "42",
        "SLUICE_WORKFLOW": "wf",
        "SLUICE_NODE_NAME": "n",
        "SLUICE_ATTEMPT": "2",
    }
    assert json.loads(prepared.files[TRIGGER_MESSAGE_VAR]) == {"key": "in/é.csv", "n": [1, 2]}
    assert prepared.args == []


def resolved(kind: str, config: dict[str, Any], secrets: dict[str, str]) -> ResolvedConnection:
    return ResolvedConnection.model_validate({"kind": kind, "config": config, "secrets": secrets})


@pytest.mark.parametrize(
    ("config", "secrets", "timeout", "expected"),
    [
        (
            {"dsn": "postgresql://u@h/db"},
            {"password": "pw"},
            None,
            {"dsn": "postgresql://u@h/db", "password": "pw"},
        ),
        (
            {"host": "h", "port": "5433", "database": "d", "user": "u", "sslmode": "require"},
            {},
            2.5,
            {"host": "h", "port": 5433, "database": "d", "user": "u", "ssl": "require"},
        ),
    ],
)
def test_postgres_params(
    config: dict[str, Any], secrets: dict[str, str], timeout: float | None, expected: dict[str, Any]
) -> None:
    params = postgres_params(resolved("postgres", config, secrets), timeout)
    server_settings = params.pop("server_settings")
    assert params == expected
    assert server_settings.get("statement_timeout") == (
        None if timeout is None else str(int(timeout * 1000))
    )


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("s3", {"dsn": "x"}, "not 'postgres'"),
        ("postgres", {"database": "d"}, "needs config 'dsn' or 'host'"),
    ],
)
def test_postgres_params_refuse_bad_connections(
    kind: str, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConnectionConfigError, match=message):
        postgres_params(resolved(kind, config, {"password": "secret"}), None)


def test_postgres_params_never_put_the_password_in_errors() -> None:
    with pytest.raises(ConnectionConfigError) as caught:
        postgres_params(resolved("postgres", {}, {"password": "hunter2"}), None)
    assert "hunter2" not in str(caught.value)


KEYS = {"access_key_id": "k", "secret_access_key": "s"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"endpoint_url": "http://other:9000", "region": "r2"},
            {"region_name": "r2", "endpoint_url": "http://other:9000", "addressing_style": "path"},
        ),
        (
            {"addressing_style": "virtual", "endpoint_url": "https://s3.example"},
            {
                "region_name": "us-east-1",
                "endpoint_url": "https://s3.example",
                "addressing_style": "virtual",
            },
        ),
        ({}, {"region_name": "us-east-1"}),
    ],
)
def test_s3_params_come_from_the_connection_only(
    config: dict[str, Any], expected: dict[str, Any]
) -> None:
    keys = {"aws_access_key_id": "k", "aws_secret_access_key": "s"}
    assert s3_params(resolved("s3", config, KEYS)) == {**expected, **keys}


@pytest.mark.parametrize(
    ("secrets", "missing"),
    [
        ({}, "access_key_id or secret_access_key"),
        ({"access_key_id": "k"}, "secret_access_key"),
    ],
)
def test_an_s3_connection_without_keys_is_refused_not_filled_in(
    secrets: dict[str, str], missing: str
) -> None:
    with pytest.raises(
        ConnectionConfigError, match=f"s3 connection 'store' has no secret {missing}"
    ):
        s3_params(resolved("s3", {}, secrets), "store")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (True, True),
        (False, False),
        (0, False),
        (3, True),
        ("", False),
        ("f", False),
        (" False ", False),
        ("no", False),
        ("0", False),
        ("t", True),
        ("ready", True),
        ([], False),
    ],
)
def test_check_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [("404", 404, True), ("NoSuchKey", 404, True), ("AccessDenied", 403, False), ("", 404, True)],
)
def test_missing_object_errors(code: str, status: int, expected: bool) -> None:
    error = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject"
    )
    assert is_missing(error) is expected


@pytest.mark.parametrize(
    ("name", "split", "quoted"),
    [
        ("events", (None, "events"), '"events"'),
        ("raw.Events", ("raw", "Events"), '"raw"."Events"'),
        ('we"ird', (None, 'we"ird'), '"we""ird"'),
    ],
)
def test_table_names(name: str, split: tuple[str | None, str], quoted: str) -> None:
    assert split_table(name) == split
    assert qualified(name) == quoted


@pytest.mark.parametrize("name", [".t", "s.", "."])
def test_bad_table_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"schema\.name"):
        split_table(name)


@pytest.mark.parametrize(
    ("last", "now", "lease", "expected"),
    [(0.0, 14.9, 30.0, False), (0.0, 15.0, 30.0, True), (10.0, 11.0, 2.0, True)],
)
def test_self_fencing_after_half_a_lease(
    last: float, now: float, lease: float, expected: bool
) -> None:
    assert must_self_fence(last, now, lease) is expected


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_status(returncode: int, status: int) -> None:
    assert exit_status(returncode) == status


@pytest.mark.parametrize(
    ("code", "expected"),
    [("true", True), (" :\n", True), ("true; true", False), ("exit 0", False), ("", False)],
)
def test_noop_shell_code(code: str, expected: bool) -> None:
    assert is_noop(code) is expected


def test_format_rows_cuts_long_cells_and_flattens_lines() -> None:
    text = format_rows(["a", "b"], [(1, None), ("x\ty\nz", "w" * 300)])
    header, first, second = text.splitlines()
    assert header == "a\tb"
    assert first == "1\tNULL"
    assert second.startswith("x y z\t")
    assert len(second.split("\t")[1]) == 200


def test_config_from_settings_with_overrides() -> None:
    settings = load_settings(executor_concurrency=7, lease_s=12, executor_id="e-1")
    config = ExecutorConfig.from_settings(settings, claim_batch=3)
    assert (config.executor_id, config.concurrency, config.claim_batch) == ("e-1", 7, 3)
    assert (config.renew_interval_s, config.self_fence_after_s, config.sweep_every_s) == (
        4.0,
        6.0,
        6.0,
    )
    assert ExecutorConfig.from_settings(load_settings()).executor_id
