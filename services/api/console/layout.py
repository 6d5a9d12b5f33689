"""Pure geometry for the console: a layered drawing of a DAG and a timeline of attempts.

No I/O. The DAG is drawn left to right: a node's column is the length of the longest path from
a root to it, so every edge points right; rows inside a column are ordered by the barycenter of
their neighbours (a few sweeps), which keeps most edges short and uncrossed at 400 nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

NODE_W = 180
NODE_H = 44
GAP_X = 70
GAP_Y = 16
MARGIN = 20
SWEEPS = 4


@dataclass(frozen=True)
class PlacedNode:
    name: str
    layer: int
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str  # SVG path data


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    nodes: list[PlacedNode]
    edges: list[Edge]


def layers_of(upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's column: 0 for roots, else 1 + the deepest upstream column.

    Upstream names that are not nodes are ignored (a spec is validated before it is stored;
    this only keeps drawing robust). A cycle cannot be layered and raises ValueError.
    """
    known = set(upstream)
    parents = {n: [u for u in ups if u in known] for n, ups in upstream.items()}
    children: dict[str, list[str]] = {n: [] for n in upstream}
    for node, ups in parents.items():
        for up in ups:
            children[up].append(node)
    waiting = {n: len(ups) for n, ups in parents.items()}
    ready = [n for n, count in waiting.items() if count == 0]
    layer = dict.fromkeys(ready, 0)
    while ready:
        node = ready.pop()
        for child in children[node]:
            layer[child] = max(layer.get(child, 0), layer[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(layer) != len(upstream):
        raise ValueError("the graph has a cycle")
    return layer


def _order(
    columns: list[list[str]], parents: Mapping[str, list[str]], children: Mapping[str, list[str]]
) -> list[list[str]]:
    """Reorder each column by the mean row of its neighbours in the previous column."""
    pos = {n: i for col in columns for i, n in enumerate(col)}
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        indices = range(1, len(columns)) if downward else range(len(columns) - 2, -1, -1)
        for c in indices:
            col = columns[c]
            neighbours = parents if downward else children

            def centre(node: str, near: Mapping[str, list[str]] = neighbours) -> float:
                linked = near[node]
                if not linked:
                    return float(pos[node])
                return sum(pos[n] for n in linked) / len(linked)

            col.sort(key=lambda n: (centre(n), pos[n]))
            for i, n in enumerate(col):
                pos[n] = i
    return columns


def layout(upstream: Mapping[str, Sequence[str]]) -> Layout:
    """Place every node of a DAG given as {node: [upstream names]}, in the mapping's order."""
    layer = layers_of(upstream)
    known = set(upstream)
    parents = {n: [u for u in ups if u in known] for n, ups in upstream.items()}
    children: dict[str, list[str]] = {n: [] for n in upstream}
    for node, ups in parents.items():
        for up in ups:
            children[up].append(node)
    depth = max(layer.values(), default=-1) + 1
    columns: list[list[str]] = [[] for _ in range(depth)]
    for node in upstream:  # spec order is the starting order inside a column
        columns[layer[node]].append(node)
    columns = _order(columns, parents, children)
    tallest = max((len(c) for c in columns), default=0)
    placed: dict[str, PlacedNode] = {}
    for c, col in enumerate(columns):
        # Centre short columns against the tallest so edges stay roughly horizontal.
        offset = (tallest - len(col)) * (NODE_H + GAP_Y) // 2
        for r, node in enumerate(col):
            placed[node] = PlacedNode(
                node, c, MARGIN + c * (NODE_W + GAP_X), MARGIN + offset + r * (NODE_H + GAP_Y)
            )
    edges = [
        Edge(up, node, _curve(placed[up], placed[node]))
        for node, ups in parents.items()
        for up in ups
    ]
    width = 2 * MARGIN + max(depth * (NODE_W + GAP_X) - GAP_X, 0)
    height = 2 * MARGIN + max(tallest * (NODE_H + GAP_Y) - GAP_Y, 0)
    return Layout(width, height, [placed[n] for n in upstream], edges)


def _curve(a: PlacedNode, b: PlacedNode) -> str:
    x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
    x2, y2 = b.x, b.y + NODE_H // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


@dataclass(frozen=True)
class Span:
    """One attempt to draw on the timeline."""

    node: str
    attempt: int
    state: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Bar:
    node: str
    attempt: int
    state: str
    left_pct: float
    width_pct: float
    seconds: float


def gantt(spans: Sequence[Span], now: datetime) -> tuple[list[Bar], float]:
    """Bars positioned in percent of the whole run (earliest start to latest end, or `now`
    for attempts still running), and the run's length in seconds. A bar is at least 0.5 %
    wide so an instant attempt stays visible."""
    if not spans:
        return [], 0.0
    start = min(s.started_at for s in spans)
    end = max((s.finished_at or now) for s in spans)
    total = max((end - start).total_seconds(), 1e-3)
    bars = []
    for s in sorted(spans, key=lambda s: (s.started_at, s.node, s.attempt)):
        finish = s.finished_at or now
        seconds = max((finish - s.started_at).total_seconds(), 0.0)
        left = 100 * (s.started_at - start).total_seconds() / total
        width = max(100 * seconds / total, 0.5)
        bars.append(
            Bar(
                s.node,
                s.attempt,
                s.state,
                round(left, 3),
                round(min(width, 100 - left + 0.5), 3),
                seconds,
            )
        )
    return bars, total
