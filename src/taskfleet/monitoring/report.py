"""`taskfleet report`: events -> one self-contained HTML file (and optionally a PNG timeline).

The page embeds plotly.js (from the `plotly` package, so it opens offline) and draws:
- a timeline with one row per worker process (host and worker slot, grouped by host) and one
  bar per task attempt, from its start (timestamp - elapsed_time) to its end, colored by outcome;
- throughput over time; a histogram of elapsed times; the failures table; the summary figures.

The figures are written as plain plotly JSON rather than through plotly's Python objects: every
string from events (task ids, exception messages) then passes one escaping step, and large
inputs do not pay for validation of every bar. The statistics come from `EventStats`, the same
code as `monitor` and the runtime's summary. Above `max_bars` attempts the timeline shows every
failed attempt (up to half the budget) and a random sample of the rest, and says so.
"""

from __future__ import annotations

import contextlib
import heapq
import html
import math
import os
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from taskfleet.errors import MissingExtraError, TaskfleetError
from taskfleet.events.reader import EventFileReader, parse_timestamp
from taskfleet.events.schema import ATTEMPT_OUTCOMES, EventType
from taskfleet.flows.drawing import Paint, describe, flow_svg
from taskfleet.flows.layout import DEFAULT_GROUP_ABOVE, FlowLayout, layout_flow
from taskfleet.monitoring.flow_progress import STATE_STYLE, FlowProgress, TaskState
from taskfleet.monitoring.statistics import EventStats, Summary
from taskfleet.monitoring.summary_text import format_summary, seconds

DEFAULT_MAX_BARS = 20_000

# Outcome codes, their legend names and colors (colorblind-safe Okabe-Ito palette).
COMPLETED, RETRY, EXCEPTION, TIMED_OUT, EXITED = range(5)
OUTCOMES: list[tuple[str, str]] = [
    ("completed", "#009E73"),
    ("completed, asked to retry", "#56B4E9"),
    ("exception", "#D55E00"),
    ("timed out", "#E69F00"),
    ("exited", "#CC79A7"),
]
_OUTCOME_OF = {
    EventType.TASK_EXCEPTION: EXCEPTION,
    EventType.TASK_TIMED_OUT: TIMED_OUT,
    EventType.TASK_EXITED: EXITED,
}
#: Events about a task of a flow that end no attempt (attempts are handled with the timeline).
_FLOW_EVENTS = frozenset({EventType.TASK_DEAD_LETTERED, EventType.TASK_BLOCKED})


@dataclass
class Attempts:
    """One entry per task attempt, in compact columns (arrays, not an object per attempt)."""

    start: array[float] = field(default_factory=lambda: array("d"))  # epoch seconds
    elapsed: array[float] = field(default_factory=lambda: array("d"))
    outcome: array[int] = field(default_factory=lambda: array("b"))
    row: array[int] = field(default_factory=lambda: array("l"))
    attempt: array[int] = field(default_factory=lambda: array("l"))
    task_id: list[str] = field(default_factory=list)
    pid: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class ReportData:
    summary: Summary
    attempts: Attempts
    rows: list[str]  # row labels, index = Attempts.row
    row_hosts: list[str]
    shown: list[int]  # indices of the attempts drawn on the timeline
    sampled: bool
    spot_terminations: list[tuple[float, str]]
    flow: FlowPicture | None = None


@dataclass
class FlowPicture:
    """The flow graph of a run whose tasks had dependencies: layout, colours, tasks per state."""

    layout: FlowLayout
    paints: dict[int, Paint]
    totals: dict[TaskState, int]


def collect(
    paths: Sequence[str | os.PathLike[str]],
    task_file: str | None = None,
    group_above: int = DEFAULT_GROUP_ABOVE,
) -> ReportData:
    """Read the events of every file (any order, duplicates dropped by `EventStats`) into the
    statistics and the per-attempt columns; with a task file whose tasks wait for others, also
    the state of every task of the flow."""
    stats = EventStats()
    progress: FlowProgress | None = None
    flow_ids: list[str] = []
    if task_file is not None:
        from taskfleet.flows.reading import read_flow

        # The run may have waited for tasks of another file: those are judged by their events.
        flow_file = read_flow(task_file, outside_ok=True)
        stats.expect(flow_file.ids)
        if flow_file.has_dependencies:
            progress = FlowProgress(flow_file.after)
            flow_ids = flow_file.ids
    attempts = Attempts()
    slot_rows: dict[tuple[str, Any], int] = {}
    unslotted: list[tuple[int, str]] = []  # attempts without worker_id (rms-cloud-tasks files)
    spots: list[tuple[float, str]] = []
    for path in paths:
        if not Path(path).exists():
            raise TaskfleetError(f"{path}: the events file does not exist. Check the path.")
        reader = EventFileReader(path, stats.bad_line)
        for batch in reader.read_batches():
            for event in stats.add_new(batch):
                event_type = event.get("event_type")
                if event_type == EventType.SPOT_TERMINATION:
                    with contextlib.suppress(KeyError, TypeError, ValueError):
                        spots.append(
                            (parse_timestamp(event["timestamp"]), str(event.get("hostname")))
                        )
                    continue
                if progress is not None and event_type in _FLOW_EVENTS:
                    with contextlib.suppress(KeyError, TypeError, ValueError):
                        at = parse_timestamp(event["timestamp"])
                        task_id = str(event.get("task_id"))
                        progress.add(event_type, task_id, at, 0.0, event.get("blocked_by"))
                if event_type not in ATTEMPT_OUTCOMES:
                    continue
                try:
                    end = parse_timestamp(event["timestamp"])
                    elapsed = float(event.get("elapsed_time") or 0.0)
                except (KeyError, TypeError, ValueError):
                    continue
                if progress is not None:
                    progress.add(event_type, str(event.get("task_id")), end, elapsed)
                if event_type == EventType.TASK_COMPLETED:
                    outcome = RETRY if event.get("retry") else COMPLETED
                else:
                    outcome = _OUTCOME_OF[event_type]
                host = str(event.get("hostname") or "(unknown)")
                worker = event.get("worker_id")
                index = len(attempts)
                if worker is None:
                    unslotted.append((index, host))
                    row = -1
                else:
                    row = slot_rows.setdefault((host, worker), len(slot_rows))
                attempts.start.append(end - elapsed)
                attempts.elapsed.append(elapsed)
                attempts.outcome.append(outcome)
                attempts.row.append(row)
                attempt = event.get("attempt")
                attempts.attempt.append(attempt if isinstance(attempt, int) else 0)
                attempts.task_id.append(str(event.get("task_id")))
                attempts.pid.append(event.get("pid"))
        reader.finish()
    if unslotted:
        _assign_lanes(attempts, unslotted, slot_rows)
    rows, row_hosts = _order_rows(attempts, slot_rows)
    flow = None
    if progress is not None:
        layout = layout_flow(flow_ids, progress.after, group_above=group_above)
        paints, totals = progress.paints(layout, stats.is_completed)
        flow = FlowPicture(layout, paints, totals)
    return ReportData(stats.summary(), attempts, rows, row_hosts, [], False, spots, flow)


def _assign_lanes(
    attempts: Attempts, unslotted: list[tuple[int, str]], slot_rows: dict[tuple[str, Any], int]
) -> None:
    """Events without a worker slot: put each host's attempts in the fewest lanes that hold
    them without overlap (greedy interval partitioning), one lane per concurrent process."""
    by_host: dict[str, list[int]] = {}
    for i, host in unslotted:
        by_host.setdefault(host, []).append(i)
    for host, items in by_host.items():
        items.sort(key=lambda i: attempts.start[i])
        lanes: list[tuple[float, int]] = []  # (free from, lane number)
        count = 0
        for i in items:
            start = attempts.start[i]
            if lanes and lanes[0][0] <= start:
                _, lane = heapq.heappop(lanes)
            else:
                count += 1
                lane = count
            heapq.heappush(lanes, (start + attempts.elapsed[i], lane))
            attempts.row[i] = slot_rows.setdefault((host, f"lane {lane}"), len(slot_rows))


def _order_rows(
    attempts: Attempts, slot_rows: dict[tuple[str, Any], int]
) -> tuple[list[str], list[str]]:
    """Rows sorted by host, then worker slot; renumbers `attempts.row` to that order."""

    def sort_key(item: tuple[tuple[str, Any], int]) -> tuple[str, int, str]:
        (host, worker), _ = item
        return (host, worker if isinstance(worker, int) else 1 << 30, str(worker))

    ordered = sorted(slot_rows.items(), key=sort_key)
    renumber = {old: new for new, (_, old) in enumerate(ordered)}
    for i, row in enumerate(attempts.row):
        attempts.row[i] = renumber[row]
    labels = [
        f"{host} #{worker}" if isinstance(worker, int) else f"{host} {worker}"
        for (host, worker), _ in ordered
    ]
    return labels, [host for (host, _), _ in ordered]


def choose_shown(attempts: Attempts, max_bars: int, seed: int = 0) -> tuple[list[int], bool]:
    """Which attempts the timeline draws: all of them up to `max_bars`; above that, every
    failed attempt up to half the budget and a uniform random sample of the others."""
    n = len(attempts)
    if n <= max_bars:
        return list(range(n)), False
    rng = random.Random(seed)
    failed = [i for i in range(n) if attempts.outcome[i] >= EXCEPTION]
    if len(failed) > max_bars // 2:
        failed = rng.sample(failed, max_bars // 2)
    failed_set = set(failed)
    others = [i for i in range(n) if i not in failed_set]
    chosen = failed + rng.sample(others, min(len(others), max_bars - len(failed)))
    chosen.sort()
    return chosen, True


# -- figures ---------------------------------------------------------------------------------


def _ms(epoch_seconds: float) -> float:
    return round(epoch_seconds * 1000.0, 3)


def timeline_figure(data: ReportData) -> dict[str, Any]:
    a = data.attempts
    traces = []
    for code, (name, color) in enumerate(OUTCOMES):
        idx = [i for i in data.shown if a.outcome[i] == code]
        if not idx:
            continue
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": f"{name} ({len(idx):,})",
                "marker": {"color": color, "line": {"width": 0}},
                # Zero-length attempts get 1 ms so they remain visible and hoverable.
                "x": [max(1.0, round(a.elapsed[i] * 1000.0, 3)) for i in idx],
                "base": [_ms(a.start[i]) for i in idx],
                "y": [data.rows[a.row[i]] for i in idx],
                "customdata": [
                    [a.task_id[i], a.attempt[i], round(a.elapsed[i], 3), a.pid[i]] for i in idx
                ],
                "hovertemplate": (
                    "task %{customdata[0]}<br>attempt %{customdata[1]}<br>"
                    "elapsed %{customdata[2]} s<br>pid %{customdata[3]}<br>"
                    f"{name}<extra>%{{y}}</extra>"
                ),
            }
        )
    n_rows = len(data.rows)
    shapes = []
    # Light bands behind alternate hosts make the per-host grouping visible.
    previous, band, start = None, -1, 0
    for r, host in enumerate([*data.row_hosts, None]):
        if host != previous:
            if previous is not None and band % 2 == 1:
                shapes.append(_band(start, r))
            band += 1
            start = r
            previous = host
    annotations = []
    for at, host in data.spot_terminations[:50]:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": _ms(at),
                "x1": _ms(at),
                "y0": 0,
                "y1": 1,
                "line": {"color": "#000", "width": 1, "dash": "dot"},
            }
        )
        annotations.append(
            {
                "x": _ms(at),
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "text": f"spot termination: {html.escape(host)}",
                "showarrow": False,
                "font": {"size": 10},
            }
        )
    title = "Timeline: one row per worker process, one bar per task attempt"
    if data.sampled:
        title += (
            f"<br><sub>{len(data.shown):,} of {len(a):,} attempts shown: every failed attempt "
            "(up to half) and a random sample of the others</sub>"
        )
    return {
        "data": traces,
        "layout": {
            "title": {"text": title},
            "barmode": "overlay",
            "bargap": 0.15,
            "height": int(min(6000, max(360, 150 + 16 * n_rows))),
            "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {
                "type": "category",
                "categoryorder": "array",
                "categoryarray": data.rows,
                "autorange": "reversed",
                "automargin": True,
                "tickfont": {"size": 10},
            },
            "shapes": shapes,
            "annotations": annotations,
            "legend": {"orientation": "h", "y": -0.08 if n_rows > 20 else -0.2},
            "margin": {"t": 70},
        },
    }


def _band(first_row: int, end_row: int) -> dict[str, Any]:
    return {
        "type": "rect",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": first_row - 0.5,
        "y1": end_row - 0.5,
        "fillcolor": "#000",
        "opacity": 0.04,
        "line": {"width": 0},
        "layer": "below",
    }


_NICE_BINS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]


def throughput_figure(data: ReportData) -> dict[str, Any]:
    """Attempts ending per second, per time bin: completions and failures stacked."""
    a = data.attempts
    if not len(a):
        return _empty_figure("Throughput")
    ends = [a.start[i] + a.elapsed[i] for i in range(len(a))]
    first, last = min(ends), max(ends)
    span = max(last - first, 1.0)
    width = next((w for w in _NICE_BINS if span / w <= 200), 86400 * math.ceil(span / 86400 / 200))
    origin = math.floor(first / width) * width
    n_bins = int((last - origin) // width) + 1
    done = [0] * n_bins
    failed = [0] * n_bins
    for i, end in enumerate(ends):
        b = int((end - origin) // width)
        if a.outcome[i] == COMPLETED:
            done[b] += 1
        elif a.outcome[i] >= EXCEPTION:
            failed[b] += 1
    x = [_ms(origin + (b + 0.5) * width) for b in range(n_bins)]
    unit = f"per second, {width} s bins" if width < 60 else f"per second, {width // 60} min bins"
    return {
        "data": [
            {
                "type": "bar",
                "name": "completed",
                "x": x,
                "y": [d / width for d in done],
                "marker": {"color": OUTCOMES[COMPLETED][1]},
            },
            {
                "type": "bar",
                "name": "failed attempts",
                "x": x,
                "y": [f / width for f in failed],
                "marker": {"color": OUTCOMES[EXCEPTION][1]},
            },
        ],
        "layout": {
            "title": {"text": f"Throughput (task attempts ending {unit})"},
            "barmode": "stack",
            "bargap": 0,
            "height": 340,
            "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
            "yaxis": {"title": {"text": "tasks / s"}},
            "legend": {"orientation": "h", "y": -0.25, "traceorder": "normal"},
        },
    }


def histogram_figure(data: ReportData, n_bins: int = 60) -> dict[str, Any]:
    """Elapsed times of completed attempts, binned here so the page stays small; values
    above the 99.5th percentile share the last bin."""
    a = data.attempts
    values = sorted(a.elapsed[i] for i in range(len(a)) if a.outcome[i] <= RETRY)
    if not values:
        return _empty_figure("Elapsed time of completed attempts")
    low = values[0]
    high = values[min(len(values) - 1, int(len(values) * 0.995))]
    width = (high - low) / n_bins or 1.0
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - low) / width))] += 1
    x = [round(low + (b + 0.5) * width, 6) for b in range(n_bins)]
    overflow = len(values) - sum(1 for v in values if v <= high)
    note = f" (last bin includes {overflow:,} above {high:.3g} s)" if overflow else ""
    return {
        "data": [
            {
                "type": "bar",
                "x": x,
                "y": counts,
                "width": width,
                "marker": {"color": OUTCOMES[COMPLETED][1]},
                "hovertemplate": "%{x:.3f} s: %{y} attempts<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": f"Elapsed time of completed attempts{note}"},
            "height": 340,
            "bargap": 0.02,
            "xaxis": {"title": {"text": "seconds"}},
            "yaxis": {"title": {"text": "attempts"}},
        },
    }


def _empty_figure(title: str) -> dict[str, Any]:
    return {
        "data": [],
        "layout": {
            "title": {"text": f"{title}: no task attempts in the events"},
            "height": 200,
        },
    }


# -- page ------------------------------------------------------------------------------------


def _json_for_script(value: Any) -> str:
    """JSON safe inside a <script> element (no '</script>' or '<!--' from event text)."""
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cards(s: Summary) -> list[tuple[str, str]]:
    e = s.elapsed
    failed = sum(g.count for g in s.failures)
    cards = [
        ("tasks completed", f"{s.tasks_completed:,} / {s.total_tasks:,}"),
        ("not completed", f"{s.tasks_not_completed:,}"),
        ("dead letters", f"{s.dead_letters:,}"),
        ("failed attempts", f"{failed:,}"),
        ("completed more than once", f"{s.tasks_completed_more_than_once:,}"),
        ("wall time", seconds(s.span_seconds)),
        ("throughput", f"{s.completion_rate:,.2f} tasks/s" if s.completion_rate else "-"),
        ("elapsed mean +/- sd", f"{seconds(e.mean)} +/- {seconds(e.sd)}" if e.count else "-"),
        (
            "median / p95 / p99",
            f"{seconds(e.median)} / {seconds(e.p95)} / {seconds(e.p99)}" if e.count else "-",
        ),
        ("hosts", f"{len(s.hosts):,}"),
    ]
    if s.blocked:  # tasks of a flow held behind a dead letter (task_blocked events)
        cards.insert(3, ("blocked", f"{s.blocked:,}"))
    return cards


def _failures_table(s: Summary) -> str:
    if not s.failures and not s.worker_errors:
        return "<p>No failures.</p>"
    rows = []
    for label, groups in (("task", s.failures), ("worker", s.worker_errors)):
        for g in groups:
            message = (g.example_message or "").strip()
            rows.append(
                "<tr>"
                f"<td>{label}</td><td>{html.escape(g.kind)}</td><td class=n>{g.count:,}</td>"
                f"<td>{html.escape(g.example_task_id or '')}</td>"
                f"<td><code>{html.escape(message[-300:])}</code></td>"
                f"<td>{html.escape(g.example_timestamp or '')}</td>"
                "</tr>"
            )
    return (
        '<table class="failures"><thead><tr><th>of</th><th>kind</th><th>count</th>'
        "<th>example task</th><th>example message</th><th>first seen</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}
.card .v{font-size:18px;font-weight:600}.card .k{color:#666;font-size:12px}
table.failures{border-collapse:collapse;font-size:13px}
table.failures td,table.failures th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;
vertical-align:top}
td.n{text-align:right} code{white-space:pre-wrap;word-break:break-word}
pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:12px}
.note{background:#fff8e1;border:1px solid #f0d98a;padding:6px 10px;border-radius:4px}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;margin-bottom:8px}
.state-key i{display:inline-block;width:12px;height:12px;margin-right:5px;border:1px solid #888;
vertical-align:-1px}
.flow-scroll{overflow:auto;max-height:900px;border:1px solid #ddd;border-radius:6px;padding:4px}
"""


def _flow_section(flow: FlowPicture | None) -> str:
    """The flow graph (plain SVG, hover text in each box's <title>) and its legend."""
    if flow is None:
        return ""
    legend = "".join(
        f'<span class="state-key" data-state="{state.value}"><i style="background:{colour}">'
        f"</i>{html.escape(text)}: {flow.totals[state]:,}</span>"
        for state, (colour, text) in STATE_STYLE.items()
    )
    return (
        "<h2>Flow</h2>"
        f'<div class="sub">{html.escape(describe(flow.layout))}. Arrows point from a task to '
        "the tasks that wait for it; hover a box for its state, attempts and times.</div>"
        f'<div class="legend" id="flow-legend">{legend}</div>'
        f'<div class="flow-scroll" id="flow">{flow_svg(flow.layout, flow.paints)}</div>'
    )


def render_html(data: ReportData, title: str, sources: Sequence[str]) -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtraError("The HTML report", "report", "plotly") from None
    s = data.summary
    figures = {
        "timeline": timeline_figure(data),
        "throughput": throughput_figure(data),
        "histogram": histogram_figure(data),
    }
    config = {"responsive": True, "displaylogo": False}
    scripts = "".join(
        f"Plotly.newPlot({_json_for_script(div)}, {_json_for_script(fig['data'])}, "
        f"{_json_for_script(fig['layout'])}, {_json_for_script(config)});\n"
        for div, fig in figures.items()
    )
    cards = "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div>'
        f'<div class="k">{html.escape(k)}</div></div>'
        for k, v in _cards(s)
    )
    notes = []
    if data.sampled:
        notes.append(
            f"The timeline shows {len(data.shown):,} of {len(data.attempts):,} task attempts "
            "(every failed attempt, up to half of them, and a random sample of the others); "
            "all other figures count every event."
        )
    if s.unreadable_lines:
        notes.append(f"{s.unreadable_lines:,} unreadable line(s) were skipped (see the summary).")
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    span = (
        f"{html.escape(s.first_event or '')} to {html.escape(s.last_event or '')}"
        if s.first_event
        else "no events"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<div class="sub">{s.events:,} events from {html.escape(", ".join(sources))}; {span};
generated {generated}</div>
{note_html}
<div class="cards" id="summary-cards">{cards}</div>
{_flow_section(data.flow)}
<h2>Timeline</h2>
<div id="timeline" data-attempts="{len(data.attempts)}" data-bars="{len(data.shown)}"></div>
<h2>Throughput</h2>
<div id="throughput"></div>
<h2>Elapsed time</h2>
<div id="histogram"></div>
<h2>Failures</h2>
{_failures_table(s)}
<h2>Summary</h2>
<pre id="summary-text">{html.escape(format_summary(s))}</pre>
<script>
{scripts}</script>
</body></html>
"""


def write_png(data: ReportData, path: str | os.PathLike[str]) -> None:
    """The timeline as a PNG, drawn with matplotlib (no browser needed)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise MissingExtraError("The --png timeline", "report", "matplotlib") from None
    a = data.attempts
    n_rows = max(1, len(data.rows))
    height = min(40.0, max(3.0, 1.2 + 0.22 * n_rows))
    fig = Figure(figsize=(14, height), dpi=100)
    ax = fig.add_subplot()
    t0 = min((a.start[i] for i in data.shown), default=0.0)
    by_outcome: dict[int, dict[int, list[tuple[float, float]]]] = {}
    for i in data.shown:
        rows = by_outcome.setdefault(a.outcome[i], {})
        rows.setdefault(a.row[i], []).append((a.start[i] - t0, max(a.elapsed[i], 1e-3)))
    for code, rows in by_outcome.items():
        for row, spans in rows.items():
            ax.broken_barh(
                spans,
                (row - 0.4, 0.8),
                facecolors=OUTCOMES[code][1],
                edgecolor="white",
                linewidth=0.3,
            )
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_yticks(range(len(data.rows)))
    ax.set_yticklabels(data.rows, fontsize=7 if n_rows > 30 else 9)
    start_text = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ax.set_xlabel(f"seconds since {start_text}")
    title = "Timeline: one row per worker process, one bar per task attempt"
    if data.sampled:
        title += f" ({len(data.shown):,} of {len(a):,} attempts shown)"
    ax.set_title(title)
    ax.legend(
        handles=[Patch(color=color, label=name) for name, color in OUTCOMES],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.6 / height),
        ncol=5,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path)


def build_report(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    png: str | os.PathLike[str] | None = None,
    max_bars: int = DEFAULT_MAX_BARS,
    title: str | None = None,
    task_file: str | None = None,
    group_above: int = DEFAULT_GROUP_ABOVE,
) -> ReportData:
    """Write the HTML report (and the PNG timeline); returns what was drawn. With a task file
    whose tasks wait for others, the page also draws the flow, coloured by state."""
    if max_bars < 1:
        raise TaskfleetError(f"--max-bars must be at least 1, not {max_bars}")
    data = collect(paths, task_file, group_above)
    data.shown, data.sampled = choose_shown(data.attempts, max_bars)
    sources = [str(p) for p in paths]
    page = render_html(data, title or "taskfleet report", sources)
    out = Path(output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    if png is not None:
        write_png(data, png)
    return data
