"""Effective priority and downward weighting."""

from __future__ import annotations

from typing import Any

import pytest

from shared.weighting import plan, with_runtime_priority
from tests.factories import shell_node, workflow


def weights(nodes: list[dict[str, Any]], **policy: Any) -> dict[str, tuple[int, int]]:
    spec = workflow(type="manual", nodes=nodes, policy=policy)
    return {p.name: (p.priority, p.weight) for p in plan(spec)}


DIAMOND = [
    shell_node("a"),
    shell_node("b", ["a"]),
    shell_node("c", ["a"], priority=8),
    shell_node("d", ["b", "c"]),
]


@pytest.mark.parametrize(
    ("nodes", "policy", "expected"),
    [
        (
            DIAMOND,
            {"weighting": "none", "priority": 3},
            {"a": (3, 1), "b": (3, 1), "c": (8, 1), "d": (3, 1)},
        ),
        # d's ancestors are a, b, c, each counted once: 1 + 3 + 3 + 8.
        (
            DIAMOND,
            {"weighting": "downward", "priority": 3},
            {"a": (3, 1), "b": (3, 4), "c": (8, 4), "d": (3, 15)},
        ),
        (
            [shell_node("x"), shell_node("y", ["x"]), shell_node("z", ["y"])],
            {"weighting": "downward"},
            {"x": (1, 1), "y": (1, 2), "z": (1, 3)},
        ),
    ],
)
def test_plan(
    nodes: list[dict[str, Any]], policy: dict[str, Any], expected: dict[str, tuple[int, int]]
) -> None:
    assert weights(nodes, **policy) == expected


def test_critical_path_outweighs_short_branch() -> None:
    nodes = [
        shell_node("root"),
        shell_node("deep1", ["root"]),
        shell_node("deep2", ["deep1"]),
        shell_node("leaf"),
    ]
    w = weights(nodes, weighting="downward", priority=5)
    assert w["deep2"][1] > w["deep1"][1] > w["leaf"][1]


def test_runtime_priority_overrides_every_node() -> None:
    spec = workflow(type="manual", nodes=DIAMOND, policy={"weighting": "downward", "priority": 3})
    out = {p.name: (p.priority, p.weight) for p in with_runtime_priority(plan(spec), 7, "downward")}
    assert out == {"a": (7, 1), "b": (7, 8), "c": (7, 8), "d": (7, 22)}


def test_long_chain_does_not_recurse_too_deep() -> None:
    nodes = [shell_node("n0")] + [shell_node(f"n{i}", [f"n{i - 1}"]) for i in range(1, 400)]
    w = weights(nodes, weighting="downward", priority=1)
    assert w["n399"] == (1, 400)


@pytest.mark.parametrize(
    ("bizdate", "zone", "expected"),
    [
        (None, "UTC", "2026-11-21T12:00:00+00:00"),
        ("2026-01-31", "UTC", "2026-02-01T12:00:00+00:00"),
        ("2026-11-20", "Asia/Shanghai", "2026-11-21T20:00:00+08:00"),
        ("2024-02-28", "UTC", "2024-02-29T12:00:00+00:00"),
    ],
)
def test_run_request_bizdate_sets_cyctime(bizdate: str | None, zone: str, expected: str) -> None:
    from datetime import date

    from shared.intake import cyctime_for
    from tests.factories import NOW

    given = date.fromisoformat(bizdate) if bizdate else None
    assert cyctime_for(given, NOW, zone).isoformat() == expected
