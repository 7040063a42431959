"""The flow graph of `taskfleet report --task-file`: each task coloured by its state, hover
text with attempts and times, groups for big flows, and the page in headless Chromium (the
graph drawn, the colours on screen, no request leaves the file)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from tests.worker.helpers import run_worker, worker_env

from flows.flow_events import EXPECTED_STATES, TASKS, flow_events
from helpers_events import CHROMIUM_ARGS, ev, write_events
from helpers_taskfiles import assert_user_error, run_taskfleet
from taskfleet.flows.layout import layout_flow
from taskfleet.monitoring.flow_progress import STATE_STYLE, FlowProgress, TaskState
from taskfleet.monitoring.report import build_report, collect
from test_report import browser_or_skip

SVG = "{http://www.w3.org/2000/svg}"
FLOW_WORKER = Path(__file__).with_name("flow_worker.py")
COLOUR_STATE = {colour: state.value for state, (colour, _) in STATE_STYLE.items()}


def write_flow(tmp_path: Path) -> tuple[Path, Path]:
    events = write_events(tmp_path / "events.jsonl", flow_events())
    tasks = tmp_path / "tasks.json"
    tasks.write_bytes(orjson.dumps(TASKS))
    return events, tasks


def boxes_of(page: str) -> dict[str, ET.Element]:
    """label -> the box's <g> element, from the report's inline SVG."""
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg" class="flow"')
    svg = page[start : page.index("</svg>", start) + len("</svg>")]
    root = ET.fromstring(svg)
    return {
        "".join(g.find(f"{SVG}text").itertext()): g  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if "node" in g.get("class", "").split()
    }


def state_colours(box: ET.Element) -> list[str]:
    return [r.get("fill", "") for r in box.iter(f"{SVG}rect") if r.get("class") == "state"]


def test_each_task_is_coloured_by_its_state(tmp_path: Path) -> None:
    events, tasks = write_flow(tmp_path)
    out = tmp_path / "report.html"
    data = build_report([events], out, task_file=str(tasks))
    assert data.flow is not None
    totals = {state.value: count for state, count in data.flow.totals.items()}
    assert totals == {"done": 4, "running": 1, "waiting": 1, "blocked": 2, "failed": 1}
    boxes = boxes_of(out.read_text())
    assert set(boxes) == set(EXPECTED_STATES)
    for task_id, state in EXPECTED_STATES.items():
        assert [COLOUR_STATE[c] for c in state_colours(boxes[task_id])] == [state], task_id
    title = {task_id: box.findtext(f"{SVG}title") or "" for task_id, box in boxes.items()}
    assert "failed (dead-lettered)" in title["chunk-4"] and "attempts: 3" in title["chunk-4"]
    assert "first start: 2025-01-01 00:00:02.800 UTC" in title["chunk-4"]
    assert "dead-lettered: 2025-01-01 00:00:06.000 UTC" in title["chunk-4"]
    # A blocked task names the failed task, also further down the flow.
    assert "blocked by a failed dependency: chunk-4 failed" in title["aggregate"]
    assert "blocked by a failed dependency: chunk-4 failed" in title["publish"]
    assert "waits for: chunk-1, chunk-2, chunk-3, chunk-4" in title["aggregate"]
    assert "attempts: 2" in title["chunk-2"] and "done" in title["chunk-2"]
    legend = re.search(r'<div class="legend" id="flow-legend">(.*?)</div>', out.read_text())
    assert legend is not None and "blocked by a failed dependency: 2" in legend.group(1)


def test_no_graph_without_dependencies(tmp_path: Path) -> None:
    events, _ = write_flow(tmp_path)
    assert collect([events]).flow is None, "without a task file, no graph"
    flat = tmp_path / "flat.json"
    flat.write_bytes(orjson.dumps([{"id": t["id"], "data": {}} for t in TASKS]))
    out = tmp_path / "r.html"
    data = build_report([events], out, task_file=str(flat))
    assert data.flow is None and 'id="flow"' not in out.read_text()


def test_big_flow_is_grouped_and_coloured_in_proportion(tmp_path: Path) -> None:
    chunks = [f"chunk-{i:05d}" for i in range(9_998)]
    tasks = [{"id": "prepare", "data": {}}]
    tasks += [{"id": c, "data": {}, "after": ["prepare"]} for c in chunks]
    tasks.append({"id": "aggregate", "data": {}, "after": chunks})
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in tasks))
    events = [ev("task_completed", 1.0, task_id="prepare", attempt=1, elapsed_time=1.0)]
    for i, c in enumerate(chunks[:6_000]):
        events.append(ev("task_completed", 2.0 + i / 1000, task_id=c, attempt=1, elapsed_time=0.5))
    for c in chunks[6_000:6_100]:
        events.append(ev("task_exception", 9.0, task_id=c, attempt=1, elapsed_time=0.1))
        events.append(ev("task_dead_lettered", 9.0, task_id=c, attempt=1))
    path = write_events(tmp_path / "events.jsonl", events)
    out = tmp_path / "report.html"
    result = run_taskfleet("report", str(path), "--task-file", str(task_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    boxes = boxes_of(out.read_text())
    assert set(boxes) == {"prepare", "chunk (9,998 tasks)", "aggregate"}
    group = boxes["chunk (9,998 tasks)"]
    assert group.get("data-count") == "9998"
    widths = {
        COLOUR_STATE[r.get("fill", "")]: float(r.get("width", 0))
        for r in group.iter(f"{SVG}rect")
        if r.get("class") == "state"
    }
    assert set(widths) == {"done", "running", "failed"}
    assert widths["done"] / widths["failed"] == pytest.approx(60, rel=1e-3)
    assert widths["running"] / widths["failed"] == pytest.approx(38.98, rel=1e-3)
    title = group.findtext(f"{SVG}title") or ""
    assert "done: 6,000" in title and "failed (dead-lettered): 100" in title
    assert "attempts: 6,100" in title
    assert [COLOUR_STATE[c] for c in state_colours(boxes["aggregate"])] == ["blocked"]


def test_report_of_a_real_run_of_a_flow_before_and_after_a_redrive(tmp_path: Path) -> None:
    """A local run of a flow whose chunk-3 fails until a fix: chunk-3 ends dead-lettered, the
    tasks after it are blocked, and the report colours them so; after the fix, a redrive and
    a rerun, the same report shows every task done."""
    chunks = [f"chunk-{i}" for i in range(1, 5)]
    fix = tmp_path / "fixed"
    tasks = [{"id": "prepare", "data": {"n": 1}}]
    tasks += [
        {
            "id": c,
            "data": {"n": 1, **({"fail_unless": str(fix)} if c == "chunk-3" else {})},
            "after": ["prepare"],
        }
        for c in chunks
    ]
    tasks += [
        {"id": "aggregate", "data": {"n": 1}, "after": chunks},
        {"id": "publish", "data": {"n": 1}, "after": ["aggregate"]},
        {"id": "index", "data": {"n": 1}, "after": ["chunk-2"]},
    ]
    task_file = tmp_path / "tasks.json"
    task_file.write_bytes(orjson.dumps(tasks))
    args = ("--task-file", "tasks.json", "--event-log-file", "events.jsonl")
    env = worker_env(FLOW_STARTS=str(tmp_path / "starts.txt"))
    run = run_worker(tmp_path, *args, script=FLOW_WORKER, env=env)
    assert run.returncode == 2, run.stderr  # a dead letter, and tasks blocked behind it
    out = tmp_path / "report.html"
    build_report([tmp_path / "events.jsonl"], out, task_file=str(task_file))
    boxes = boxes_of(out.read_text())
    states = {task_id: [COLOUR_STATE[c] for c in state_colours(b)] for task_id, b in boxes.items()}
    assert states == {
        "prepare": ["done"],
        **{c: ["failed" if c == "chunk-3" else "done"] for c in chunks},
        "aggregate": ["blocked"],
        "publish": ["blocked"],
        "index": ["done"],
    }
    assert "chunk-3 failed" in (boxes["publish"].findtext(f"{SVG}title") or "")
    # The runtime's task_blocked events give the same count as the graph.
    assert '<div class="v">2</div><div class="k">blocked</div>' in out.read_text()

    fix.touch()
    url = f"sqlite:///{tmp_path / 'events.state.db'}"
    assert run_taskfleet("redrive", "--queue", url).returncode == 0
    rerun = run_worker(tmp_path, *args, script=FLOW_WORKER, env=env)
    assert rerun.returncode == 0, rerun.stderr
    build_report([tmp_path / "events.jsonl"], out, task_file=str(task_file))
    page = out.read_text()
    boxes = boxes_of(page)
    assert {t: [COLOUR_STATE[c] for c in state_colours(b)] for t, b in boxes.items()} == {
        t["id"]: ["done"] for t in tasks
    }
    assert "attempts: 2" in (boxes["chunk-3"].findtext(f"{SVG}title") or "")
    assert '<div class="k">blocked</div>' not in page


def test_bad_task_file_is_one_line(tmp_path: Path) -> None:
    events, _ = write_flow(tmp_path)
    cycle = tmp_path / "cycle.jsonl"
    cycle.write_bytes(
        b'{"id": "a", "data": {}, "after": ["b"]}\n{"id": "b", "data": {}, "after": ["a"]}\n'
    )
    out = tmp_path / "r.html"
    result = run_taskfleet("report", str(events), "--task-file", str(cycle), "-o", str(out))
    assert_user_error(result, "cycle.jsonl: line", "cycle")
    assert not out.exists()


def test_flow_graph_in_headless_chromium(tmp_path: Path) -> None:
    chromium = browser_or_skip()
    from playwright.sync_api import sync_playwright

    events, tasks = write_flow(tmp_path)
    out = tmp_path / "report.html"
    build_report([events], out, task_file=str(tasks))
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_function("document.querySelector('#timeline .main-svg')")
            shown = page.evaluate(
                """() => [...document.querySelectorAll('#flow g.node')].map(g => {
                    const box = g.getBoundingClientRect();
                    const state = g.querySelector('rect.state');
                    return {label: g.querySelector('text').textContent,
                            fill: getComputedStyle(state).fill,
                            title: g.querySelector('title').textContent,
                            visible: box.width > 100 && box.height > 20};
                })"""
            )
            arrows = page.evaluate("document.querySelectorAll('#flow path.edge').length")
            page.hover("#flow g.node[data-node='0']")
            hovered = page.evaluate(
                "document.querySelector('#flow g.node:hover title').textContent"
            )
            shot = page.locator("#flow").screenshot()
        finally:
            browser.close()
    assert problems == []
    assert [url for url in requests if not url.startswith("file:")] == [], "works offline"
    assert {item["label"] for item in shown} == set(EXPECTED_STATES)
    assert all(item["visible"] for item in shown)
    assert arrows == 10
    rgb = {
        state.value: "rgb({}, {}, {})".format(*(int(colour[i : i + 2], 16) for i in (1, 3, 5)))
        for state, (colour, _) in STATE_STYLE.items()
    }
    for item in shown:
        assert item["fill"] == rgb[EXPECTED_STATES[item["label"]]], item["label"]
    assert hovered.startswith("prepare\ndone\nattempts: 1")
    # The colours are on screen, not only in the DOM.
    from io import BytesIO

    from PIL import Image

    colours = {c for _, c in Image.open(BytesIO(shot)).convert("RGB").getcolors(1 << 20) or []}
    for state in TaskState:
        colour = STATE_STYLE[state][0]
        assert tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) in colours, state


def states_of(progress: FlowProgress, ids: list[str], done: set[str]) -> dict[str, str]:
    layout = layout_flow(ids, progress.after)
    states, blocked_by = progress.states(layout, done.__contains__)
    return {
        task_id: state.value + (f" by {blocked_by[task_id]}" if task_id in blocked_by else "")
        for task_id, state in states.items()
    }


def test_dependencies_outside_the_task_file_are_judged_by_their_events(tmp_path: Path) -> None:
    """A second file's tasks may wait for tasks loaded from a first one: the report draws the
    second file and takes the first file's tasks' states from the events."""
    second = tmp_path / "second.jsonl"
    second.write_bytes(
        b'{"id": "x", "data": {}, "after": ["first-a"]}\n'
        b'{"id": "y", "data": {}, "after": ["first-b"]}\n'
        b'{"id": "z", "data": {}, "after": ["first-c"]}\n'
    )
    events = [
        ev("task_completed", 1.0, task_id="first-a", attempt=1, elapsed_time=0.5),
        ev("task_exception", 2.0, task_id="first-b", attempt=1, elapsed_time=0.5),
        ev("task_dead_lettered", 2.0, task_id="first-b", attempt=1),
    ]
    path = write_events(tmp_path / "events.jsonl", events)
    out = tmp_path / "r.html"
    data = build_report([path], out, task_file=str(second))
    assert data.flow is not None
    boxes = boxes_of(out.read_text())
    states = {task_id: [COLOUR_STATE[c] for c in state_colours(b)] for task_id, b in boxes.items()}
    assert states == {"x": ["running"], "y": ["blocked"], "z": ["waiting"]}
    assert "first-b failed" in (boxes["y"].findtext(f"{SVG}title") or "")


def test_blocked_events_and_redrives() -> None:
    after = {"b": ("a",), "c": ("b",)}
    # A task_blocked event whose dead letter is in another host's file: believed...
    progress = FlowProgress(after)
    progress.add("task_blocked", "c", 5.0, 0.0, blocked_by="a")
    assert states_of(progress, ["a", "b", "c"], set()) == {
        "a": "running",
        "b": "waiting",
        "c": "blocked by a",
    }
    # ...until the blocker completes (redriven and run).
    assert states_of(progress, ["a", "b", "c"], {"a"})["c"] == "waiting"
    # A blocker whose dead letter is here is judged by its own events: redriven and running
    # again (an attempt after the dead letter), its dependents wait instead of being blocked.
    progress.add("task_exception", "a", 4.0, 1.0)
    progress.add("task_dead_lettered", "a", 4.0, 0.0)
    assert states_of(progress, ["a", "b", "c"], set()) == {
        "a": "failed",
        "b": "blocked by a",
        "c": "blocked by a",
    }
    progress.add("task_exception", "a", 9.0, 1.0)
    assert states_of(progress, ["a", "b", "c"], set()) == {
        "a": "running",
        "b": "waiting",
        "c": "waiting",
    }
