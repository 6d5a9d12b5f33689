"""The one results table of `python -m bench`, built from the scenarios' JSON lines (pure).

Each row: figure, value, the floor measured in the same run (when there is one), value / floor,
the target (DESIGN.md 13) and whether it is met. A figure whose scenario did not produce it says
so rather than disappearing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = list[dict[str, Any]]


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    floor: str
    ratio: str
    target: str
    met: bool | None  # None: not measured in this run


def _find(results: Results, scenario: str, **fields: Any) -> dict[str, Any] | None:
    for r in results:
        if r.get("scenario") == scenario and all(r.get(k) == v for k, v in fields.items()):
            return r
    return None


def _dig(record: dict[str, Any] | None, *path: str) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if (isinstance(value, float) and value >= 100) or isinstance(value, int):
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}"


def _ratio(value: Any, floor: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(floor, int | float) or not floor:
        return "—"
    return f"{value / floor:.3f}"


def _row(
    figure: str,
    value: Any,
    unit: str,
    target: str,
    check: Callable[[float], bool] | None,
    floor: Any = None,
    floor_unit: str = "",
    shown_ratio: str | None = None,
) -> Row:
    # No check: the target needs a floor this run does not measure.
    met = check(float(value)) if check and isinstance(value, int | float) else None
    return Row(
        figure,
        _num(value, unit),
        _num(floor, floor_unit) if floor is not None else "—",
        shown_ratio if shown_ratio is not None else _ratio(value, floor),
        target,
        met,
    )


def rows(results: Results) -> list[Row]:
    """The table's rows, in the order of issue 19's table."""
    out: list[Row] = []
    kafka = _find(results, "kafka_latency")
    kafka_floor = _find(results, "baseline_kafka_latency")
    out.append(
        _row(
            "Kafka event→node-start p99",
            _dig(kafka, "event_to_node_start", "p99_ms"),
            " ms",
            "≤ 10 ms",
            lambda v: v <= 10,
            _dig(kafka_floor, "p99_ms"),
            " ms (produce→consume p99)",
        )
    )
    out.append(
        _row(
            "Kafka event→admitted p99",
            _dig(kafka, "event_to_admitted", "p99_ms"),
            " ms",
            "≤ 5 ms",
            lambda v: v <= 5,
        )
    )
    hook = _find(results, "webhook_to_node_start")
    out.append(
        _row(
            "webhook POST→node-start p99", _dig(hook, "p99_ms"), " ms", "≤ 10 ms", lambda v: v <= 10
        )
    )
    pg_insert = _dig(_find(results, "baseline_pg_insert"), "rows_per_s")
    out.append(
        _row(
            "Kafka intake, dedup + audit",
            _dig(_find(results, "kafka_intake"), "events_per_s"),
            "/s",
            "≥ 15,000/s",
            lambda v: v >= 15_000,
            pg_insert,
            " rows/s (batched INSERT)",
        )
    )
    out.append(
        _row(
            "admit_batch alone",
            _dig(_find(results, "baseline_admit_batch"), "events_per_s"),
            "/s",
            "≥ 20,000/s",
            lambda v: v >= 20_000,
            pg_insert,
            " rows/s (batched INSERT)",
        )
    )
    claim = _dig(_find(results, "dispatch_baseline"), "skip_locked_claim_rows_per_s")
    spawn = _dig(_find(results, "dispatch_baseline"), "bash_spawn_per_s")
    noop = {n: _find(results, "dispatch", mode="noop", replicas=n) for n in (1, 4)}
    for n, record in noop.items():
        out.append(
            _row(
                f"no-op node starts, {n} executor{'s' if n > 1 else ''}",
                _dig(record, "node_starts_per_s"),
                "/s",
                "≥ 20,000/s",
                lambda v: v >= 20_000,
                claim,
                " rows/s (SKIP LOCKED claim)",
            )
        )
    one, four = _dig(noop[1], "node_starts_per_s"), _dig(noop[4], "node_starts_per_s")
    scaling = (
        four / one
        if isinstance(one, int | float) and isinstance(four, int | float) and one
        else None
    )
    out.append(_row("no-op starts, 4 executors / 1", scaling, "x", "≥ 1", lambda v: v >= 1))
    shell = _dig(_find(results, "dispatch", mode="shell", replicas=1), "node_starts_per_s")
    shell_ratio = shell / spawn if isinstance(shell, int | float) and spawn else None
    out.append(
        _row(
            "shell node starts / bash spawn",
            shell_ratio,
            "",
            "≥ 0.85 (TMPDIR=/dev/shm)",
            lambda v: v >= 0.85,
            spawn,
            " spawns/s",
            shown_ratio=_num(shell_ratio) if shell_ratio is not None else "—",
        )
    )
    out.append(
        _row(
            "webhook intake, 64 concurrent",
            _dig(_find(results, "webhook_intake"), "requests_per_s"),
            " req/s",
            "≥ 0.5 x bare endpoint (not measured)",
            None,
        )
    )
    for label, target in (("GET /healthz", 2.0), ("POST /hooks/s3", None)):
        record = _find(results, "webhook_keepalive", request=label)
        out.append(
            _row(
                f"webhook keep-alive, back to back: {label}",
                _dig(record, "p50_ms"),
                " ms p50",
                "≤ 2 ms" if target else "≤ 2 ms + admission",
                (lambda v: v <= 2.0) if target else None,
            )
        )
    out.append(
        _row(
            "kafka-listener idle CPU",
            _dig(_find(results, "kafka_listener_idle_cpu"), "cpu_percent_of_one_core"),
            " % of a core",
            "≤ 3 %",
            lambda v: v <= 3,
        )
    )
    for mix in ("kafka", "s3", "mixed"):
        summary = _find(results, "scale_summary", mix=mix)
        out.append(
            _row(
                f"matching cost, {mix}: largest / smallest trigger count",
                _dig(summary, "ratio_largest_to_smallest"),
                "x",
                "≤ 2x",
                lambda v: v <= 2,
            )
        )
    out.extend(_memory(results))
    out.append(_correctness(results))
    return out


MEMORY_SERVICES = (
    "api",
    "executor",
    "scheduler",
    "kafka-listener",
    "storage-listener",
    "notifier",
)
BOUNDED_RATIO = 1.10
"""Memory under a backlog is bounded when the largest RSS of the sampled window's second half is
at most this times the largest of its first half."""


def _memory(results: Results) -> list[Row]:
    """RSS per service idle and under intake (no target), and the kafka-listener's under a
    backlog (DESIGN.md 13: bounded), without and with `policy.max_waiting`."""
    out = []
    idle = _find(results, "memory", phase="idle")
    intake = _find(results, "memory", phase="intake")
    for service in MEMORY_SERVICES:
        pair = (_dig(idle, "rss_mib", service), _dig(intake, "rss_mib", service))
        value = (
            f"{pair[0]:.0f} / {pair[1]:.0f} MiB"
            if all(isinstance(v, int | float) for v in pair)
            else "—"
        )
        out.append(Row(f"RSS {service}: idle / intake max", value, "—", "—", "—", None))
    backlog = [r for r in results if r.get("scenario") == "memory" and r.get("phase") == "backlog"]
    for label, held in (("", False), (" at max_waiting", True)):
        record = next((r for r in backlog if (r.get("max_waiting") is not None) == held), None)
        listener = _dig(record, "kafka-listener")
        ratio = _dig(listener, "second_to_first_half")
        value = "—"
        start, peak = _dig(listener, "rss_start_mib"), _dig(listener, "rss_max_mib")
        if isinstance(ratio, int | float) and record is not None:
            span = f"{start:.0f} → {peak:.0f} MiB; " if start and peak else ""
            value = (
                f"{ratio:.2f}x ({span}"
                f"{_num(record.get('admitted'))} of {_num(record.get('backlog'))} read)"
            )
        out.append(
            Row(
                f"kafka-listener RSS under a backlog{label}: 2nd / 1st half max",
                value,
                "—",
                "—",
                f"bounded (≤ {BOUNDED_RATIO:.2f}x)",
                ratio <= BOUNDED_RATIO if isinstance(ratio, int | float) else None,
            )
        )
    return out


def _correctness(results: Results) -> Row:
    """Limits held, no priority inversion, one instance per event: the bench checks itself."""
    dispatch = [r for r in results if r.get("scenario") == "dispatch"]
    scale = [r for r in results if r.get("scenario") == "scale"]
    if not dispatch and not scale:
        return Row(
            "limits held, 0 priority inversions, instances = events", "—", "—", "—", "", None
        )
    problems = [
        f"{r.get('mode')}x{r.get('replicas')}"
        for r in dispatch
        if not r.get("limits_held") or r.get("priority_inversions")
    ]
    problems += [
        f"scale {r['mix']}@{r['triggers']}" for r in scale if r["instances_per_event"] != 1
    ]
    return Row(
        "limits held, 0 priority inversions, instances = events",
        "yes" if not problems else "no: " + ", ".join(problems),
        "—",
        "—",
        "all",
        not problems,
    )


def markdown(table: list[Row]) -> str:
    lines = [
        "| figure | value | floor (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        met = "—" if r.met is None else ("yes" if r.met else "no")
        lines.append(f"| {r.figure} | {r.value} | {r.floor} | {r.ratio} | {r.target} | {met} |")
    return "\n".join(lines)
