"""The console's pure parts: DAG layering and ordering, the attempt timeline, Running Status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api.console import dag_svg, instance_html, layout
from services.api.console.running_status import running_status
from shared.models.instances import AttemptOut, NodeInstanceOut

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("graph", "layers"),
    [
        ({}, {}),
        ({"a": []}, {"a": 0}),
        ({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, {"a": 0, "b": 1, "c": 1, "d": 2}),
        # the longest path decides: d waits for the chain a-b-c
        ({"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]}, {"a": 0, "b": 1, "c": 2, "d": 3}),
        ({"x": ["ghost"]}, {"x": 0}),  # unknown upstream names are ignored
        ({"b": ["a"], "a": []}, {"a": 0, "b": 1}),  # order of the mapping does not matter
    ],
)
def test_layers_follow_the_longest_path(
    graph: dict[str, list[str]], layers: dict[str, int]
) -> None:
    assert layout.layers_of(graph) == layers


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        layout.layers_of({"a": ["b"], "b": ["a"]})


def test_every_edge_points_right_and_no_two_nodes_overlap_at_400_nodes() -> None:
    # 20 chains of 20 nodes, each node also fed by the previous chain's node: a dense DAG.
    graph: dict[str, list[str]] = {}
    for chain in range(20):
        for step in range(20):
            ups = [f"n{chain}_{step - 1}"] if step else []
            if chain and step:
                ups.append(f"n{chain - 1}_{step - 1}")
            graph[f"n{chain}_{step}"] = ups
    drawn = layout.layout(graph)
    assert len(drawn.nodes) == 400 and len(drawn.edges) == 20 * 19 + 19 * 19
    where = {n.name: n for n in drawn.nodes}
    assert all(where[e.source].x < where[e.target].x for e in drawn.edges)
    spots = {(n.x, n.y) for n in drawn.nodes}
    assert len(spots) == 400
    assert all(
        n.x + layout.NODE_W <= drawn.width and n.y + layout.NODE_H <= drawn.height
        for n in drawn.nodes
    )


def test_barycenter_ordering_uncrosses_a_swapped_pair() -> None:
    # Spec order puts d (child of b) above c (child of a): the sweep puts them in line.
    drawn = layout.layout({"a": [], "b": [], "d": ["b"], "c": ["a"]})
    y = {n.name: n.y for n in drawn.nodes}
    assert (y["a"] < y["b"]) == (y["c"] < y["d"])


def test_gantt_places_bars_by_time_and_keeps_running_ones_open() -> None:
    spans = [
        layout.Span("a", 1, "succeeded", T0, T0 + timedelta(seconds=10)),
        layout.Span("b", 1, "failed", T0 + timedelta(seconds=10), T0 + timedelta(seconds=15)),
        layout.Span("b", 2, "running", T0 + timedelta(seconds=15), None),
    ]
    bars, total = layout.gantt(spans, now=T0 + timedelta(seconds=20))
    assert total == 20
    assert [(b.node, b.attempt, b.left_pct, b.width_pct) for b in bars] == [
        ("a", 1, 0.0, 50.0),
        ("b", 1, 50.0, 25.0),
        ("b", 2, 75.0, 25.0),
    ]
    assert layout.gantt([], now=T0) == ([], 0.0)
    instant = layout.gantt([layout.Span("a", 1, "succeeded", T0, T0)], now=T0)[0][0]
    assert instant.width_pct >= 0.5  # still visible


@pytest.mark.parametrize(
    ("active", "last", "status"),
    [
        ({"running": 1, "waiting": 3}, "failed", "running"),
        ({"waiting": 2}, "succeeded", "queuing"),
        ({}, "succeeded", "success"),
        ({"running": 0, "waiting": 0}, "failed", "failed"),
        ({}, "terminated", "terminated"),
        ({}, "cancelled", "terminated"),
        ({}, None, "none"),
    ],
)
def test_running_status(active: dict[str, int], last: str | None, status: str) -> None:
    assert running_status(active, last) == status


HOSTILE = '<script>alert("x")</script>&'


def test_svg_and_attempt_rows_escape_every_value_from_specs_and_attempts() -> None:
    drawn = layout.layout({HOSTILE: [], "b": [HOSTILE]})
    info = {name: {"type": HOSTILE, "priority": 1, "weight": 2} for name in (HOSTILE, "b")}
    svg = dag_svg.render(drawn, info, {HOSTILE: "running", "b": "pending"})
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="node st-') == 2 and "p1 · w2" in svg
    node = NodeInstanceOut(
        id=1,
        name=HOSTILE,
        type="shell",
        state="failed",
        priority=1,
        weight=1,
        resource_group="default",
        upstream=[],
        attempts=[
            AttemptOut(
                id=1,
                attempt=1,
                state="failed",
                reason=HOSTILE,
                exit_code=3,
                executor=None,
                started_at=T0,
                finished_at=T0 + timedelta(seconds=1),
                parameters={"p": HOSTILE},
            )
        ],
    )
    rows = instance_html.attempt_rows([node])
    assert "<script>" not in rows and rows.count("&lt;script&gt;") == 6
    assert '<td class="exit-code">3</td>' in rows
    bars, _ = layout.gantt([layout.Span(HOSTILE, 1, "failed", T0, T0)], now=T0)
    assert "<script>" not in instance_html.gantt_svg(bars)


def _attempt(id: int, attempt: int, state: str) -> AttemptOut:
    return AttemptOut(
        id=id,
        attempt=attempt,
        state=state,
        reason=None,
        exit_code=0 if state == "succeeded" else 1,
        executor=None,
        started_at=T0,
        finished_at=T0,
        parameters=None,
    )


def test_outputs_are_escaped_per_attempt_and_current_is_the_latest_success() -> None:
    name = 'n"><b>'
    node = NodeInstanceOut(
        id=1,
        name=name,
        type="python",
        state="succeeded",
        priority=1,
        weight=1,
        resource_group="default",
        upstream=[],
        attempts=[
            _attempt(10, 1, "succeeded"),
            _attempt(11, 2, "succeeded"),
            _attempt(12, 3, "failed"),
        ],
    )
    outputs = {10: '{"v": "<img src=x onerror=alert(1)>"}', 11: '{"v": "' + "y" * 5000 + '"}'}
    url = "/console/api/workspaces/default/instances/7/nodes/{node}/outputs"
    rows = instance_html.attempt_rows([node], outputs, url)
    assert "<img" not in rows and "<b>" not in rows
    assert "&lt;img src=x onerror=alert(1)&gt;" in rows
    assert rows.count('class="attempt-outputs"><details') == 2  # attempt 3 made none
    current = instance_html.current_outputs([node], outputs, url)
    assert current.startswith('<tr data-outputs-node="n&quot;&gt;&lt;b&gt;"><td>')
    shown = instance_html.OUTPUTS_SHOWN - len('{"v": "')  # the first characters, then a link
    assert "<td>2</td>" in current and "y" * shown + "\u2026</pre>" in current
    assert "y" * (shown + 1) not in current
    assert 'href="/console/api/workspaces/default/instances/7/nodes/n%22%3E%3Cb%3E/outputs"' in (
        current
    )
    retried = node.model_copy(
        update={"attempts": [_attempt(10, 1, "succeeded"), _attempt(11, 2, "failed")]}
    )
    older = instance_html.current_outputs([retried], {}, url)
    assert "<td>1</td>" in older and '<span class="muted">none</span>' in older
    failed = node.model_copy(update={"attempts": [_attempt(12, 1, "failed")]})
    assert instance_html.current_outputs([failed], outputs, url) == ""
