"""HTML of the parts of an instance page that grow with its nodes: the timeline and the table of
attempts, built as strings.

At the 400-node limit these are thousands of cells, re-rendered every second while someone
watches; building them here rather than in a template keeps that within the page-time budget.
Every value that comes from a spec, a node or an attempt is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from services.api.console.layout import Bar
from shared.models.instances import NodeInstanceOut

ROW_H = 22
# Outputs may hold up to 1 MiB per attempt; a page shows their start and links the whole value.
OUTPUTS_SHOWN = 4000


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def gantt_svg(bars: Sequence[Bar]) -> str:
    """One row per attempt, positioned in percent of the run."""
    out = [f'<svg class="gantt" id="gantt" width="100%" height="{len(bars) * ROW_H + 4}">']
    for row, b in enumerate(bars):
        label = f"{escape(b.node)} #{b.attempt}"
        y = row * ROW_H
        out.append(
            f'<g class="bar st-{escape(b.state)}"><title>{label} {escape(b.state)}'
            f" {b.seconds:.2f} s</title>"
            f'<rect x="{b.left_pct}%" y="{y + 2}" width="{b.width_pct}%" height="18" rx="3"/>'
            f'<text x="{b.left_pct}%" dx="4" y="{y + 15}">{label}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def outputs_cell(text: str | None, full_url: str) -> str:
    """An attempt's outputs (their JSON text, possibly cut short by the query) as escaped text.

    They are untrusted data a node wrote, so they are only ever shown, never interpreted; a
    value longer than `OUTPUTS_SHOWN` links to the API's answer (as JSON) for the rest.
    """
    if text is None:
        return '<span class="muted">none</span>'
    if len(text) <= OUTPUTS_SHOWN:
        return f'<pre class="outputs">{escape(text)}</pre>'
    return (
        f'<pre class="outputs">{escape(text[:OUTPUTS_SHOWN])}\u2026</pre>'
        f'<a href="{escape(full_url)}">whole value (JSON)</a>'
    )


def current_outputs(
    nodes: Sequence[NodeInstanceOut], outputs: Mapping[int, str], url_of: str
) -> str:
    """`<tr>`s of the current outputs: per node, its latest succeeded attempt's (what
    `${nodes.<node>.outputs}` reads downstream). `url_of` is the API path with `{node}`."""
    out = []
    for n in nodes:
        done = [a for a in n.attempts if a.state == "succeeded"]
        if not done:
            continue
        latest = done[-1]
        name = escape(n.name)
        url = url_of.replace("{node}", quote(n.name, safe=""))
        out.append(
            f'<tr data-outputs-node="{name}"><td>{name}</td><td>{latest.attempt}</td>'
            f"<td>{outputs_cell(outputs.get(latest.id), url)}</td></tr>"
        )
    return "".join(out)


def attempt_rows(
    nodes: Sequence[NodeInstanceOut],
    outputs: Mapping[int, str] | None = None,
    url_of: str = "",
) -> str:
    """`<tr>`s of the attempts table: one per attempt, or one saying the node has not started.

    `outputs` maps an attempt id to its outputs' JSON text; `url_of` is the API path of a
    node's outputs with `{node}` in place of its name."""
    outputs = outputs or {}
    out = []
    for n in nodes:
        name = escape(n.name)
        head = (
            f'<tr data-node="{name}"><td>{name}</td>'
            f'<td><span class="state st-{escape(n.state)}">{escape(n.state)}</span></td>'
        )
        if not n.attempts:
            out.append(f'{head}<td colspan="9" class="muted">not started</td></tr>')
            continue
        for a in n.attempts:
            params = ""
            if a.parameters:
                text = escape(json.dumps(a.parameters, indent=2, sort_keys=True, default=str))
                params = (
                    f'<details data-key="{name}#{a.attempt}"><summary>{len(a.parameters)}'
                    f"</summary><pre>{text}</pre></details>"
                )
            code = "" if a.exit_code is None else str(a.exit_code)
            produced = ""
            if a.id in outputs:
                url = url_of.replace("{node}", quote(n.name, safe=""))
                produced = (
                    f'<details data-key="{name}#{a.attempt}:out"><summary>outputs</summary>'
                    f"{outputs_cell(outputs[a.id], url)}</details>"
                )
            out.append(
                f"{head}<td>{a.attempt}</td>"
                f'<td><span class="state st-{escape(a.state)}">{escape(a.state)}</span></td>'
                f'<td class="exit-code">{code}</td><td>{escape(a.reason or "")}</td>'
                f"<td>{_ts(a.started_at)}</td><td>{_ts(a.finished_at)}</td><td>{params}</td>"
                f'<td class="attempt-outputs">{produced}</td>'
                f'<td><button type="button" class="link" data-log-node="{name}"'
                f' data-log-attempt="{a.attempt}">log</button></td></tr>'
            )
    return "".join(out)
