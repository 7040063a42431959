"""A flow's layout as SVG (and as a one-page HTML file around it): text, no script, no fetch.

The picture is plain SVG so that it opens anywhere offline, prints, and can be inlined into
the report's page as it is. Hover text is the SVG `<title>` of each box (browsers show it as a
tooltip), so hovering needs no script either. Every id is escaped once, here: a task id is
text, never markup. A box is filled with one colour per state in proportion to its tasks (a
group of 9,998 chunks, 9,000 done, shows nine tenths green), so a grouped picture still says
how far each part of the flow got.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskfleet.flows.layout import FlowLayout, FlowNode

NODE_WIDTH = 180
NODE_HEIGHT = 30
COLUMN_STEP = 250  # node width plus the room the arrows need
ROW_STEP = 44
MARGIN = 20
LABEL_CHARACTERS = 24
#: Ids a group's hover text lists before it says how many more there are.
TITLE_IDS = 10
PLAIN_FILL = "#E8EEF7"
STROKE = "#44546A"


@dataclass(frozen=True)
class Paint:
    """How one box is drawn: (colour, how many tasks) segments, left to right, and its hover
    text. Boxes without a `Paint` are drawn plain, with their ids as hover text."""

    segments: Sequence[tuple[str, int]]
    title: str


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARACTERS else label[: LABEL_CHARACTERS - 1] + "…"


def plain_title(node: FlowNode) -> str:
    """Hover text of a box before the flow runs: its id, or a group's size and first ids."""
    if not node.is_group:
        return node.members[0]
    shown = ", ".join(node.members[:TITLE_IDS])
    more = len(node.members) - TITLE_IDS
    return f"{len(node.members):,} tasks with the same dependencies and dependents: {shown}" + (
        f" and {more:,} more" if more > 0 else ""
    )


def flow_svg(layout: FlowLayout, paints: Mapping[int, Paint] | None = None) -> str:
    """The picture as one `<svg>` element (boxes `g.node`, arrows `path.edge`)."""
    columns = layout.layers
    tallest = max((len(column) for column in columns), default=0)
    width = 2 * MARGIN + max(0, len(columns) - 1) * COLUMN_STEP + NODE_WIDTH
    height = 2 * MARGIN + max(0, tallest - 1) * ROW_STEP + NODE_HEIGHT
    places: dict[int, tuple[float, float]] = {}
    for layer, column in enumerate(columns):
        top = MARGIN + (tallest - len(column)) * ROW_STEP / 2
        for row, index in enumerate(column):
            places[index] = (MARGIN + layer * COLUMN_STEP, top + row * ROW_STEP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui,sans-serif" '
        'font-size="12">',
        '<defs><marker id="flow-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{STROKE}"/></marker></defs>',
        '<g class="edges">',
    ]
    tops = [
        MARGIN + (tallest - len(column)) * ROW_STEP / 2 for column in columns
    ]  # y of each column's first box
    for source, target in layout.edges:
        parts.append(_edge(source, target, places, layout, tops))
    parts.append('</g><g class="nodes">')
    for index, node in enumerate(layout.nodes):
        x, y = places[index]
        parts.append(_node(index, node, x, y, (paints or {}).get(index)))
    parts.append("</g></svg>")
    return "\n".join(parts)


def _edge(
    source: int,
    target: int,
    places: Mapping[int, tuple[float, float]],
    layout: FlowLayout,
    tops: Sequence[float],
) -> str:
    """An arrow from the right side of `source` to the left side of `target`. An arrow that
    skips layers passes above the columns it crosses, so it never hides behind a box."""
    x1, y1 = places[source]
    x2, y2 = places[target]
    x1 += NODE_WIDTH
    y1 += NODE_HEIGHT / 2
    y2 += NODE_HEIGHT / 2
    first, last = layout.nodes[source].layer + 1, layout.nodes[target].layer
    if last - first >= 1:
        over = min(tops[first:last]) - ROW_STEP / 4
        gap = COLUMN_STEP - NODE_WIDTH
        xa, xb = x1 + gap, x2 - gap
        d = (
            f"M{x1:.1f},{y1:.1f} C{x1 + gap / 2:.1f},{y1:.1f} {x1 + gap / 2:.1f},{over:.1f} "
            f"{xa:.1f},{over:.1f} L{xb:.1f},{over:.1f} C{x2 - gap / 2:.1f},{over:.1f} "
            f"{x2 - gap / 2:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        )
    else:
        bend = (x2 - x1) / 2
        d = (
            f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} "
            f"{x2:.1f},{y2:.1f}"
        )
    return (
        f'<path class="edge" data-from="{source}" data-to="{target}" d="{d}" fill="none" '
        f'stroke="{STROKE}" stroke-opacity="0.55" stroke-width="1.2" '
        'marker-end="url(#flow-arrow)"/>'
    )


def _node(index: int, node: FlowNode, x: float, y: float, paint: Paint | None) -> str:
    kind = "node group" if node.is_group else "node"
    title = paint.title if paint is not None else plain_title(node)
    out = [
        f'<g class="{kind}" data-node="{index}" data-count="{len(node.members)}" '
        f'data-layer="{node.layer}" transform="translate({x:.1f},{y:.1f})">',
        f"<title>{_escape(title)}</title>",
    ]
    if node.is_group:  # a second box behind: a stack of tasks
        out.append(
            f'<rect x="4" y="-4" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="4" '
            f'fill="#fff" stroke="{STROKE}"/>'
        )
    out.append(
        f'<rect class="box" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="4" '
        f'fill="{PLAIN_FILL if paint is None else "#fff"}" stroke="{STROKE}"/>'
    )
    if paint is not None:
        total = sum(count for _, count in paint.segments) or 1
        left = 0.0
        for colour, count in paint.segments:
            if count <= 0:
                continue
            span = NODE_WIDTH * count / total
            out.append(
                f'<rect class="state" x="{left:.2f}" width="{span:.2f}" height="{NODE_HEIGHT}" '
                f'fill="{colour}"/>'
            )
            left += span
        out.append(
            f'<rect width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="4" fill="none" '
            f'stroke="{STROKE}"/>'
        )
    out.append(
        f'<text x="{NODE_WIDTH / 2}" y="{NODE_HEIGHT / 2 + 4}" text-anchor="middle" '
        f'fill="#111">{_escape(_short(node.label))}</text>'
    )
    out.append("</g>")
    return "".join(out)


def describe(layout: FlowLayout) -> str:
    """One line about the picture: tasks, boxes, arrows, layers, and whether it groups."""
    text = (
        f"{layout.tasks:,} tasks in {len(layout.layers):,} layers: {len(layout.nodes):,} boxes, "
        f"{len(layout.edges):,} arrows"
    )
    if layout.grouped:
        groups = sum(1 for node in layout.nodes if node.is_group)
        boxes = "1 box stands" if groups == 1 else f"{groups:,} boxes each stand"
        text += f" ({boxes} for tasks with the same dependencies and dependents)"
    return text


def flow_page(layout: FlowLayout, title: str) -> str:
    """A self-contained HTML page holding the SVG (no script, no external resource), well-formed
    as XML too, so that tools that read SVG can read the page."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/>
<title>{_escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}
h1{{font-size:20px;margin:0 0 4px}} .sub{{color:#666;margin-bottom:16px}}
.flow-scroll{{overflow:auto;border:1px solid #ddd;border-radius:6px;padding:4px}}</style>
</head><body>
<h1>{_escape(title)}</h1>
<div class="sub">{_escape(describe(layout))}. Arrows point from a task to the tasks that wait
for it; hover a box for its ids.</div>
<div class="flow-scroll" id="flow">{flow_svg(layout)}</div>
</body></html>
"""
