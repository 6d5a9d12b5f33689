"""Coalescing windows: the `coalesce` option, window planning, and `${workflow.triggerMessages}`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.coalesce import OpenWindow, Plan, Segment, closes_at, coalesce_of, is_due, plan
from shared.models.triggers import Coalesce, TriggerSpec
from shared.params.binding.python import bind_python
from shared.params.binding.shell import bind_shell
from shared.params.resolution import ResolutionInput, resolve_parameters

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
OPTION = Coalesce(window_s=10, max_events=4)
TRIGGERS: TypeAdapter[Any] = TypeAdapter(TriggerSpec)


def window(events: int, *, max_events: int = 4, age_s: float = 0) -> OpenWindow:
    opened = T0 - timedelta(seconds=age_s)
    return OpenWindow(
        opened_at=opened,
        closes_at=opened + timedelta(seconds=10),
        max_events=max_events,
        events=events,
    )


def s(new: bool, count: int, closes: bool) -> Segment:
    return Segment(new=new, count=count, closes=closes)


@pytest.mark.parametrize(
    ("open_window", "arriving", "expected"),
    [
        # No open window: the first event opens one.
        (None, 1, Plan(False, (s(True, 1, False),))),
        (None, 0, Plan(False, ())),
        # A burst larger than max_events: full windows close at once, the rest stays open.
        (None, 10, Plan(False, (s(True, 4, True), s(True, 4, True), s(True, 2, False)))),
        (None, 8, Plan(False, (s(True, 4, True), s(True, 4, True)))),
        # An open window takes what fits, then new windows follow.
        (window(1), 1, Plan(False, (s(False, 1, False),))),
        (window(1), 3, Plan(False, (s(False, 3, True),))),
        (window(3), 6, Plan(False, (s(False, 1, True), s(True, 4, True), s(True, 1, False)))),
        # The open window keeps the max_events it opened with.
        (window(1, max_events=2), 3, Plan(False, (s(False, 1, True), s(True, 2, False)))),
        # Time is up (exactly at closes_at too): close it first, open a new one.
        (window(1, age_s=10), 1, Plan(True, (s(True, 1, False),))),
        (window(1, age_s=3600), 5, Plan(True, (s(True, 4, True), s(True, 1, False)))),
        (window(1, age_s=9.999), 1, Plan(False, (s(False, 1, False),))),
        # A full window left open (its closer crashed) is closed by the next admission.
        (window(4), 1, Plan(True, (s(True, 1, False),))),
        # Nothing arrives, but the due window is still reported for closing.
        (window(2, age_s=11), 0, Plan(True, ())),
    ],
)
def test_plan(open_window: OpenWindow | None, arriving: int, expected: Plan) -> None:
    assert plan(open_window, arriving, T0, OPTION) == expected


@pytest.mark.parametrize("burst", [1, 3, 4, 5, 999, 1000, 1001, 2500])
@pytest.mark.parametrize("already", [None, 0, 1, 999])
def test_a_burst_is_split_without_loss(burst: int, already: int | None) -> None:
    option = Coalesce(window_s=60, max_events=1000)
    current = None if already is None else window(already, max_events=1000)
    result = plan(current, burst, T0, option)
    assert sum(seg.count for seg in result.segments) == burst
    room = 1000 - (already or 0)
    for seg in result.segments:
        assert 0 < seg.count <= 1000
        assert seg.closes == (seg.count == (room if not seg.new else 1000))
    # Only the last segment may stay open.
    assert all(seg.closes for seg in result.segments[:-1])


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="arriving"):
        plan(None, -1, T0, OPTION)


def test_due_and_closing_time() -> None:
    assert closes_at(T0, Coalesce(window_s=2.5)) == T0 + timedelta(seconds=2.5)
    assert not is_due(window(3), T0)
    assert is_due(window(4), T0)
    assert is_due(window(0, age_s=10), T0)


@pytest.mark.parametrize(
    ("coalesce", "field"),
    [
        ({"window_s": 0}, "coalesce.window_s"),
        ({"window_s": -1}, "coalesce.window_s"),
        ({"window_s": 86401}, "coalesce.window_s"),
        ({"window_s": "soon"}, "coalesce.window_s"),
        ({"max_events": 10}, "coalesce.window_s"),
        ({"window_s": 10, "max_events": 0}, "coalesce.max_events"),
        ({"window_s": 10, "max_events": 100_001}, "coalesce.max_events"),
        ({"window_s": 10, "max_events": 1.5}, "coalesce.max_events"),
        ({"window_s": 10, "max_event": 5}, "coalesce.max_event"),
        ("10s", "coalesce"),
    ],
)
@pytest.mark.parametrize("kind", ["s3", "kafka"])
def test_invalid_coalesce_names_the_field(kind: str, coalesce: Any, field: str) -> None:
    spec = {"name": "t", "type": kind, "coalesce": coalesce}
    spec.update({"bucket": "data"} if kind == "s3" else {"topic": "orders"})
    with pytest.raises(ValidationError) as info:
        TRIGGERS.validate_python(spec)
    locations = {".".join(str(p) for p in e["loc"][1:]) for e in info.value.errors()}
    assert field in locations


def test_coalesce_option_defaults() -> None:
    spec = TRIGGERS.validate_python(
        {"name": "t", "type": "s3", "bucket": "data", "coalesce": {"window_s": 10}}
    )
    assert coalesce_of(spec) == Coalesce(window_s=10, max_events=1000)
    plain = TRIGGERS.validate_python({"name": "t", "type": "kafka", "topic": "orders"})
    assert coalesce_of(plain) is None
    upstream = TRIGGERS.validate_python({"name": "t", "type": "workflow", "workflow": "w"})
    assert coalesce_of(upstream) is None


HOSTILE = [
    {"key": "$(touch /tmp/pwned)"},
    {"key": "'; rm -rf / #"},
    {"key": '"""\nimport os\nos.system("id")\n"""'},
    {"key": "`id` ${HOME} \\ \x07"},
]


def resolution(messages: list[Any] | None, first: Any = None) -> Any:
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=T0,
            workflow_name="wf",
            instance_id=7,
            version=1,
            node_name="n",
            trigger_message=first,
            trigger_messages=messages,
        )
    )


@pytest.mark.parametrize(
    ("messages", "first", "expected"),
    [
        (None, None, []),
        (None, {"key": "a"}, [{"key": "a"}]),
        ([{"key": "a"}, {"key": "b"}], {"key": "a"}, [{"key": "a"}, {"key": "b"}]),
    ],
)
def test_trigger_messages_builtin(messages: Any, first: Any, expected: Any) -> None:
    res = resolution(messages, first)
    assert res.lookup("workflow.triggerMessages") == expected
    assert json.loads(res.resolve("workflow.triggerMessages")) == expected


def test_trigger_messages_paths() -> None:
    res = resolution([{"key": "a"}, {"key": "b"}], {"key": "a"})
    assert res.resolve("workflow.triggerMessages[1].key") == "b"
    assert res.resolve("workflow.triggerMessage.key") == "a"


def test_trigger_messages_bind_as_data_in_shell_and_python() -> None:
    res = resolution(HOSTILE, HOSTILE[0])
    shell = bind_shell('printf "%s" "${workflow.triggerMessages}"', res)
    assert "pwned" not in shell.code and "rm -rf" not in shell.code
    assert [json.loads(v) for v in shell.env.values()] == [HOSTILE]
    code = bind_python("import json\nmessages = json.loads(${workflow.triggerMessages})\n", res)
    scope: dict[str, Any] = {}
    exec(compile(code, "<node>", "exec"), scope)
    assert scope["messages"] == HOSTILE


def test_a_full_window_of_messages_reaches_shell_through_a_file() -> None:
    messages = [{"key": f"in/{n:04}.csv", "pad": "x" * 1000} for n in range(1000)]
    shell = bind_shell('printf "%s" "${workflow.triggerMessages}"', resolution(messages))
    # Over 1 MB: too big for an environment entry, so it travels in a file, every byte kept.
    assert all(len(v) < 64 * 1024 for v in shell.env.values())
    [content] = shell.files.values()
    assert json.loads(content) == messages
