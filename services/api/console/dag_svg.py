"""SVG markup of a laid-out DAG, built as one string.

A 400-node graph is thousands of attributes; assembling them here rather than in a template
keeps the page well under its time budget. Names and types are escaped; everything else is a
number this module computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from services.api.console.layout import NODE_H, NODE_W, Layout

LABEL_CHARS = 24


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def render(
    graph: Layout,
    info: Mapping[str, Mapping[str, object]],
    states: Mapping[str, str] | None = None,
) -> str:
    """`info[node]`: type, priority, weight; `states[node]`, when given, colours each node."""
    out = [
        f'<svg class="dag" id="dag" data-width="{graph.width}" data-height="{graph.height}"'
        f' height="{min(graph.height, 560)}" viewBox="0 0 {graph.width} {graph.height}"'
        ' preserveAspectRatio="xMinYMin meet">'
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7"'
        ' markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>'
        '<g class="edges">'
    ]
    out.extend(f'<path d="{e.path}" marker-end="url(#arrow)"/>' for e in graph.edges)
    out.append("</g>")
    for n in graph.nodes:
        i = info[n.name]
        name = escape(n.name)
        kind = escape(str(i["type"]))
        meta = f"{kind} · p{i['priority']} · w{i['weight']}"
        state = escape(states[n.name]) if states is not None else ""
        title = f"{name} ({kind}) priority {i['priority']} weight {i['weight']}"
        shown = f' · <tspan class="state">{state}</tspan>' if states is not None else ""
        out.append(
            f'<g class="node st-{state or "plain"}" data-node="{name}"'
            f' transform="translate({n.x},{n.y})" tabindex="0">'
            f"<title>{title}{' · ' + state if state else ''}</title>"
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="8" y="18" class="name">{escape(_label(n.name))}</text>'
            f'<text x="8" y="35" class="meta">{meta}{shown}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
