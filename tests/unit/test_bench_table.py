"""The bench table: each figure against its floor and target, and the bench's own checks."""

from __future__ import annotations

from typing import Any

from bench.table import markdown, rows


def _by_figure(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {r.figure: r for r in rows(results)}


RESULTS: list[dict[str, Any]] = [
    {"scenario": "baseline_kafka_latency", "p99_ms": 5.9},
    {
        "scenario": "kafka_latency",
        "event_to_admitted": {"p99_ms": 4.0},
        "event_to_node_start": {"p99_ms": 37.1},
    },
    {"scenario": "dispatch_baseline", "skip_locked_claim_rows_per_s": 200_000,
     "bash_spawn_per_s": 1000},
    {"scenario": "dispatch", "mode": "noop", "replicas": 1, "node_starts_per_s": 4318,
     "limits_held": True, "priority_inversions": 0},
    {"scenario": "dispatch", "mode": "noop", "replicas": 4, "node_starts_per_s": 4060,
     "limits_held": True, "priority_inversions": 0},
    {"scenario": "dispatch", "mode": "shell", "replicas": 1, "node_starts_per_s": 900,
     "limits_held": True, "priority_inversions": 0},
    {"scenario": "scale_summary", "mix": "s3", "ratio_largest_to_smallest": 16.9},
    {"scenario": "scale_summary", "mix": "kafka", "ratio_largest_to_smallest": 0.9},
    {"scenario": "scale", "mix": "s3", "triggers": 10, "instances_per_event": 1.0},
]  # fmt: skip


def test_figures_are_compared_with_their_floor_and_target() -> None:
    table = _by_figure(RESULTS)
    latency = table["Kafka event→node-start p99"]
    assert latency.value == "37.10 ms" and latency.met is False
    assert latency.ratio == f"{37.1 / 5.9:.3f}"
    assert table["Kafka event→admitted p99"].met is True
    assert table["no-op starts, 4 executors / 1"].met is False
    assert table["shell node starts / bash spawn"].met is True
    assert table["matching cost, s3: largest / smallest trigger count"].met is False
    assert table["matching cost, kafka: largest / smallest trigger count"].met is True


def test_a_figure_not_measured_says_so() -> None:
    table = _by_figure(RESULTS)
    missing = table["Kafka intake, dedup + audit"]
    assert (missing.value, missing.met) == ("—", None)
    assert table["matching cost, mixed: largest / smallest trigger count"].met is None


def test_the_bench_checks_limits_order_and_instances() -> None:
    check = "limits held, 0 priority inversions, instances = events"
    assert _by_figure(RESULTS)[check].met is True
    broken = [
        *RESULTS,
        {"scenario": "dispatch", "mode": "noop", "replicas": 4, "limits_held": True,
         "priority_inversions": 3},
        {"scenario": "scale", "mix": "kafka", "triggers": 10, "instances_per_event": 0.6},
    ]  # fmt: skip
    row = _by_figure(broken)[check]
    assert row.met is False
    assert "noopx4" in row.value and "scale kafka@10" in row.value


def test_markdown_has_one_line_per_row() -> None:
    text = markdown(rows(RESULTS))
    lines = text.splitlines()
    assert lines[0].startswith("| figure | value | floor")
    assert len(lines) == 2 + len(rows(RESULTS))
