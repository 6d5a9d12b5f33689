"""`sluice backfill`: arguments, the request it sends, and what it prints."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import httpx
import pytest

from services.scheduler.commands import backfill, register
from shared.client.commands import EXIT_USAGE, UsageError
from shared.client.http import Client, ClientError

ANSWER: dict[str, Any] = {
    "id": 7,
    "workflow": "daily_report",
    "start": "2026-11-01T00:00:00+08:00",
    "end": "2026-11-10T23:59:59+08:00",
    "parallelism": 2,
    "priority": 5,
    "order": "desc",
    "instance_ids": list(range(110, 100, -1)),
    "created_at": "2026-11-21T03:00:00Z",
    "states": {"waiting": 10},
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["backfill", *argv])


class Recorder:
    """An HTTP transport that records requests and answers with a canned response."""

    def __init__(self, status: int = 202, body: Any = ANSWER) -> None:
        self.requests: list[httpx.Request] = []
        self._status = status
        self._body = body

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self._status, json=self._body)


def client(recorder: Recorder, workspace: str = "default") -> Client:
    return Client(
        "http://sluice.test:8080/",
        "slc_secret",
        workspace,
        transport=httpx.MockTransport(recorder),
    )


def test_posts_the_backfill_and_prints_a_summary() -> None:
    recorder = Recorder()
    args = parse(
        "daily_report",
        "--start",
        "2026-11-01T00:00:00+08:00",
        "--end",
        "2026-11-10T23:59:59+08:00",
        "--parallelism",
        "2",
        "--priority",
        "5",
        "--order",
        "desc",
    )
    out = io.StringIO()
    assert backfill(args, client(recorder, "analytics"), out) == 0
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == (
        "http://sluice.test:8080/api/v1/workspaces/analytics/workflows/daily_report/backfill"
    )
    assert request.headers["authorization"] == "Bearer slc_secret"
    assert json.loads(request.content) == {
        "start": "2026-11-01T00:00:00+08:00",
        "end": "2026-11-10T23:59:59+08:00",
        "parallelism": 2,
        "priority": 5,
        "order": "desc",
    }
    text = out.getvalue()
    assert "backfill     7\n" in text
    assert "instances    10 (110 .. 101, in run order)\n" in text
    assert "states       waiting 10\n" in text
    assert "priority     5\n" in text


def test_defaults_and_json_output() -> None:
    args = parse("daily_report", "--start", "2026-11-01T00:00Z", "--end", "2026-11-02T00:00Z")
    assert (args.parallelism, args.order, args.priority, args.json) == (1, "asc", None, False)
    args = parse(
        "daily_report", "--start", "2026-11-01T00:00Z", "--end", "2026-11-02T00:00Z", "--json"
    )
    recorder = Recorder()
    out = io.StringIO()
    assert backfill(args, client(recorder), out) == 0
    assert json.loads(out.getvalue()) == ANSWER
    assert json.loads(recorder.requests[0].content)["parallelism"] == 1


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-01T00:00:00", "2026-11-02T00:00:00Z", "invalid backfill: start: must carry"),
        ("2026-11-02T00:00Z", "2026-11-01T00:00Z", "invalid backfill: end: must not be before"),
        ("yesterday", "2026-11-01T00:00Z", "invalid backfill: start: expected a time with a UTC"),
    ],
)
def test_invalid_input_is_refused_before_any_request(start: str, end: str, message: str) -> None:
    recorder = Recorder()
    args = parse("daily_report", "--start", start, "--end", end)
    with pytest.raises(UsageError, match=message):
        backfill(args, client(recorder), io.StringIO())
    assert recorder.requests == []


def test_invalid_input_exits_with_the_usage_code(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("daily_report", "--start", "2026-11-02T00:00Z", "--end", "2026-11-01T00:00Z")
    assert args.func(args) == EXIT_USAGE
    assert "end: must not be before start" in capsys.readouterr().err


def test_api_refusals_carry_the_api_message() -> None:
    answer = {"error": {"code": "invalid", "field": "end", "message": "end: too many fire times"}}
    args = parse("daily_report", "--start", "2026-11-01T00:00Z", "--end", "2026-11-02T00:00Z")
    with pytest.raises(ClientError, match="end: too many fire times") as raised:
        backfill(args, client(Recorder(422, answer)), io.StringIO())
    assert raised.value.status == 422


def test_several_workflows_are_backfilled_as_one_group() -> None:
    second = {**ANSWER, "id": 8, "workflow": "dwd", "instance_ids": [120, 121]}
    recorder = Recorder(body={"group_id": 7, "backfills": [ANSWER, second]})
    args = parse("dwd", "daily_report", "--start", "20261101", "--end", "20261110")
    out = io.StringIO()
    assert backfill(args, client(recorder), out) == 0
    [request] = recorder.requests
    assert str(request.url) == "http://sluice.test:8080/api/v1/workspaces/default/backfills"
    assert json.loads(request.content)["workflows"] == ["dwd", "daily_report"]
    text = out.getvalue()
    assert "backfill     7\n" in text and "backfill     8\n" in text
