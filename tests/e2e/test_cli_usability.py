"""What a new user meets in the `sluice` client: every error of a spec, trigger filters, waiting
with progress, logs of nodes that never ran, help text. Real CLI processes against a real API."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.cli import build_parser
from tests.support.api import ApiServer, api_subprocess, sluice_cli, table_rows
from tests.support.executor import executor_process


@pytest.fixture(name="server")
async def server_fixture(db_url: str) -> AsyncIterator[ApiServer]:
    async with api_subprocess(db_url) as server:
        yield server


async def test_apply_prints_every_error_of_a_spec(server: ApiServer, tmp_path: Path) -> None:
    bad = {
        "name": "bad",
        "type": "manual",
        "nodes": [
            {"name": "a", "type": "shell", "code": "echo a", "retries": "many"},
            {"name": "b", "type": "shell", "code": "echo b", "timeout_s": -1},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = await sluice_cli(server, "apply", "-f", str(path))
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) >= 2, result.err
    assert all(line.startswith("error: workflow 'bad': nodes.") for line in lines)
    assert any(line.startswith("error: workflow 'bad': nodes.0.") for line in lines)
    assert any(line.startswith("error: workflow 'bad': nodes.1.") for line in lines)
    as_json = await sluice_cli(server, "apply", "-f", str(path), "--json")
    [entry] = as_json.json()
    assert entry["action"] == "error" and len(entry["errors"]) == len(lines)


async def test_triggers_show_their_filter(server: ApiServer, tmp_path: Path) -> None:
    trigger = {"name": "kt", "type": "kafka", "topic": "orders", "filter": "value.action == 'buy'"}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trigger))
    assert (await sluice_cli(server, "apply", "-f", str(path))).code == 0
    listed = await sluice_cli(server, "triggers")
    header, row = table_rows(listed.out)
    assert header[-1] == "FILTER"
    assert listed.out.splitlines()[1].endswith("value.action == 'buy'")
    assert row[:3] == ["kt", "kafka", "orders"]


@pytest.mark.timeout(90)
async def test_wait_shows_progress_the_failing_node_and_a_never_run_node(
    db_url: str, server: ApiServer, tmp_path: Path
) -> None:
    spec = {
        "name": "w",
        "type": "manual",
        "nodes": [
            {"name": "first", "type": "shell", "code": "echo one"},
            {"name": "breaks", "type": "shell", "code": "echo oops; exit 3", "upstream": ["first"]},
            {"name": "after", "type": "shell", "code": "echo never", "upstream": ["breaks"]},
        ],
    }
    path = tmp_path / "w.json"
    path.write_text(json.dumps(spec))
    assert (await sluice_cli(server, "apply", "-f", str(path))).code == 0
    async with executor_process(db_url, tmp_path / "executor.log"):
        waited = await sluice_cli(server, "run-workflow", "w", "--wait", "--timeout", "60")
    assert waited.code == 1, waited.err
    lines = waited.out.splitlines()
    iid = lines[0].split()[1]
    assert lines[0] == f"instance {iid} waiting"
    assert f"instance {iid}: 3/3 nodes done" in lines
    assert lines[-1] == f"instance {iid} failed"
    assert f"node breaks failed (exited with code 3); its log: sluice logs {iid} breaks" in lines, (
        waited.out
    )

    log = await sluice_cli(server, "logs", iid, "breaks")
    assert log.code == 0 and "oops" in log.out
    never = await sluice_cli(server, "logs", iid, "after")
    assert never.code == 1 and never.out == ""
    assert never.err == (
        f"error: node 'after' of instance {iid} has not run and will not; "
        f"see `sluice instance {iid}`\n"
    )

    followed = await sluice_cli(server, "logs", iid, "after", "--follow")
    assert (followed.code, followed.err) == (never.code, never.err)

    as_json = await sluice_cli(server, "run-workflow", "w", "--wait", "--json", "--timeout", "1")
    # Nothing runs it now: the wait gives up, and stdout holds no progress lines.
    assert as_json.code == 1 and as_json.out == ""
    assert "is still waiting after 1s" in as_json.err


def _walk(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.Action]]:
    """Every (command, option) of a parser and its sub-commands, nested ones included."""
    found = []
    for action in parser._actions:
        found.append((name, action))
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found.extend(_walk(sub, f"{name} {sub_name}".strip()))
    return found


def test_every_option_has_help_and_no_stray_double_colon() -> None:
    parser = build_parser()
    found = _walk(parser, "")
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, action in found
        if action.dest != "help" and not action.help
    ]
    assert missing == []
    assert len({name for name, _ in found}) > 25  # the walk reached the sub-commands
    helps = [parser.format_help()]
    for _, action in found:
        if isinstance(action, argparse._SubParsersAction):
            helps.extend(sub.format_help() for sub in action.choices.values())
    assert [h.splitlines()[0] for h in helps if "::" in h] == []


async def test_connections_take_secrets_only_from_a_file_or_prompt(
    server: ApiServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("access_key_id: AK1\nsecret_access_key: very-secret-1\n")
    created = await sluice_cli(
        server,
        "connections",
        "create",
        "store",
        "--kind",
        "s3",
        "--set",
        "endpoint_url=http://127.0.0.1:9000",
        "--secrets-file",
        str(secrets),
    )
    assert created.code == 0, created.err
    assert created.out == "connection/store created (secrets: access_key_id, secret_access_key)\n"
    prompted = await sluice_cli(
        server,
        "connections",
        "create",
        "db",
        "--kind",
        "postgres",
        "--set",
        "dsn=postgresql://u@127.0.0.1/x",
        "--secret",
        "password",
        stdin="hunter2-secret\n",
    )
    assert prompted.out == "connection/db created (secrets: password)\n", prompted.err
    again = await sluice_cli(
        server, "connections", "create", "db", "--kind", "postgres", "--set", "dsn=postgresql://h/y"
    )
    assert again.out == "connection/db updated (secrets: password)\n"

    listed = await sluice_cli(server, "connections", "list")
    rows = table_rows(listed.out)
    assert rows[0] == ["NAME", "KIND", "SECRETS", "UPDATED", "CONFIG"]
    assert [r[:3] for r in rows[1:]] == [
        ["db", "postgres", "password"],
        ["store", "s3", "access_key_id,secret_access_key"],
    ]
    as_json = await sluice_cli(server, "connections", "list", "--json")
    for text in (listed.out, as_json.out):
        assert "very-secret-1" not in text and "hunter2-secret" not in text
    assert as_json.json()[0]["config"] == {"dsn": "postgresql://h/y"}

    on_command_line = await sluice_cli(
        server, "connections", "create", "x", "--kind", "secret", "--secret", "key=abc"
    )
    assert on_command_line.code == 2
    assert on_command_line.err == (
        "error: --secret key: give only the name; the value is read from a prompt or stdin, "
        "never from the command line\n"
    )
    refused = await sluice_cli(server, "connections", "create", "x", "--kind", "smtp")
    assert refused.code == 1
    assert refused.err.startswith("error: config.host: required for an smtp connection"), refused

    deleted = await sluice_cli(server, "connections", "delete", "db")
    assert deleted.out == "connection/db deleted\n"
    gone = await sluice_cli(server, "connections", "delete", "db")
    assert gone.code == 1 and gone.err == "error: connection 'db' not found\n"


async def test_apply_warns_of_connections_that_do_not_exist(
    server: ApiServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text('{"access_key_id": "a", "secret_access_key": "b"}')
    made = await sluice_cli(
        server, "connections", "create", "store", "--kind", "s3", "--secrets-file", str(secrets)
    )
    assert made.code == 0, made.err
    spec = {
        "name": "cw",
        "type": "manual",
        "nodes": [
            {
                "name": "wait",
                "type": "check",
                "check": {"kind": "sql", "connection": "pg", "query": "SELECT 1"},
            },
            {
                "name": "load",
                "type": "sync",
                "upstream": ["wait"],
                "sync": {
                    "kind": "s3_to_postgres",
                    "s3_connection": "store",
                    "bucket": "b",
                    "key": "k.csv",
                    "connection": "pg",
                    "table": "t",
                },
            },
        ],
    }
    path = tmp_path / "cw.json"
    path.write_text(json.dumps(spec))
    applied = await sluice_cli(server, "apply", "-f", str(path))
    assert applied.code == 0
    assert applied.out == "workflow/cw created (v1), published\n"
    assert applied.err.splitlines() == [
        "warning: workflow 'cw': nodes.0.check.connection: connection 'pg' does not exist yet "
        "(`sluice connections create pg ...`)",
        "warning: workflow 'cw': nodes.1.sync.connection: connection 'pg' does not exist yet "
        "(`sluice connections create pg ...`)",
    ]
    as_json = await sluice_cli(server, "apply", "-f", str(path), "--json")
    assert len(as_json.json()[0]["warnings"]) == 2
    await sluice_cli(
        server, "connections", "create", "pg", "--kind", "postgres", "--set", "dsn=postgresql://h/d"
    )
    clean = await sluice_cli(server, "apply", "-f", str(path))
    assert (clean.code, clean.err) == (0, "")
