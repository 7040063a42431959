"""`taskfleet flow show`: the picture of a flow before it runs, as SVG and as an HTML page.

The command runs as a real process; the SVG is parsed as XML and its boxes, arrows, layers
and groups are read back from it, so a picture that draws the wrong graph fails here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson

from helpers_taskfiles import assert_user_error, run_taskfleet
from taskfleet.flows.layout import layout_flow

SVG = "{http://www.w3.org/2000/svg}"


def write_jsonl(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    return path


def fan_flow(chunks: int, extra: bool = False) -> list[dict[str, Any]]:
    """prepare -> chunk-i -> aggregate (and publish, after aggregate and prepare)."""
    entries: list[dict[str, Any]] = [{"id": "prepare", "data": {}}]
    names = [f"chunk-{i:05d}" for i in range(chunks)]
    entries += [{"id": n, "data": {"i": i}, "after": ["prepare"]} for i, n in enumerate(names)]
    entries.append({"id": "aggregate", "data": {}, "after": names})
    if extra:
        entries.append({"id": "publish", "data": {}, "after": ["aggregate", "prepare"]})
    return entries


def read_svg(root: ET.Element) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]]]:
    """label -> the box's attributes (and its hover text), and arrows as (label, label)."""
    boxes: dict[str, dict[str, str]] = {}
    by_index: dict[str, str] = {}
    for g in root.iter(f"{SVG}g"):
        if "node" not in g.get("class", "").split():
            continue
        label = "".join(g.find(f"{SVG}text").itertext())  # type: ignore[union-attr]
        title = "".join(g.find(f"{SVG}title").itertext())  # type: ignore[union-attr]
        boxes[label] = {**g.attrib, "title": title}
        by_index[g.get("data-node", "")] = label
    arrows = {
        (by_index[p.get("data-from", "")], by_index[p.get("data-to", "")])
        for p in root.iter(f"{SVG}path")
        if p.get("class") == "edge"
    }
    return boxes, arrows


def test_svg_of_a_small_flow_has_every_task_and_arrow(tmp_path: Path) -> None:
    tasks = write_jsonl(tmp_path / "tasks.jsonl", fan_flow(4, extra=True))
    out = tmp_path / "flow.svg"
    result = run_taskfleet("flow", "show", str(tasks), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "7 tasks in 4 layers: 7 boxes, 10 arrows" in result.stderr
    boxes, arrows = read_svg(ET.parse(out).getroot())
    chunks = [f"chunk-{i:05d}" for i in range(4)]
    assert set(boxes) == {"prepare", "aggregate", "publish", *chunks}
    layers = {label: int(attrs["data-layer"]) for label, attrs in boxes.items()}
    assert layers == {"prepare": 0, **dict.fromkeys(chunks, 1), "aggregate": 2, "publish": 3}
    expected = {("prepare", c) for c in chunks} | {(c, "aggregate") for c in chunks}
    assert arrows == expected | {("aggregate", "publish"), ("prepare", "publish")}
    assert not any("group" in attrs["class"] for attrs in boxes.values()), "small: no groups"
    # Left to right: x grows with the layer.
    xs = {
        label: float(re.search(r"translate\(([\d.]+),", a["transform"]).group(1))  # type: ignore[union-attr]
        for label, a in boxes.items()
    }
    assert xs["prepare"] < xs["chunk-00000"] < xs["aggregate"] < xs["publish"]


def test_ten_thousand_task_fan_out_is_three_boxes(tmp_path: Path) -> None:
    tasks = write_jsonl(tmp_path / "tasks.jsonl", fan_flow(9_998))
    out = tmp_path / "flow.svg"
    result = run_taskfleet("flow", "show", str(tasks), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "10,000 tasks in 3 layers: 3 boxes, 2 arrows (1 box stands for" in result.stderr
    boxes, arrows = read_svg(ET.parse(out).getroot())
    assert set(boxes) == {"prepare", "chunk (9,998 tasks)", "aggregate"}
    group = boxes["chunk (9,998 tasks)"]
    assert "group" in group["class"].split() and group["data-count"] == "9998"
    assert group["title"].startswith("9,998 tasks with the same dependencies and dependents:")
    assert "chunk-00000" in group["title"] and "and 9,988 more" in group["title"]
    assert arrows == {("prepare", "chunk (9,998 tasks)"), ("chunk (9,998 tasks)", "aggregate")}
    assert out.stat().st_size < 10_000, "the picture of a big flow stays small"


def test_grouping_keeps_different_shapes_apart() -> None:
    """Only tasks with the same dependencies AND dependents share a box."""
    ids = ["a", "b", "x1", "x2", "x3", "y1", "y2", "end"]
    after = {
        "x1": ("a",),
        "x2": ("a",),
        "x3": ("a", "b"),  # waits for more: its own box
        "y1": ("b",),
        "y2": ("b",),
        "end": ("x1", "x2", "x3", "y1"),  # y2 is awaited by nobody: its own box
    }
    layout = layout_flow(ids, after, group_above=0)
    members = sorted(sorted(node.members) for node in layout.nodes)
    assert members == [["a"], ["b"], ["end"], ["x1", "x2"], ["x3"], ["y1"], ["y2"]]
    assert layout.grouped
    ungrouped = layout_flow(ids, after)
    assert len(ungrouped.nodes) == len(ids) and not ungrouped.grouped
    # Every task comes after its dependencies in the order the report computes states in.
    order = list(layout.topological_members())
    assert sorted(order) == sorted(ids)
    for task_id, waits_for in after.items():
        assert all(order.index(other) < order.index(task_id) for other in waits_for)


def test_html_page_is_self_contained_and_escapes_ids(tmp_path: Path) -> None:
    hostile = '<b onmouseover="x()">&amp;'
    entries = [
        {"id": "start", "data": {}},
        {"id": hostile, "data": {}, "after": ["start"]},
    ]
    tasks = write_jsonl(tmp_path / "tasks.jsonl", entries)
    out = tmp_path / "flow.html"
    result = run_taskfleet("flow", "show", str(tasks), "-o", str(out), "--title", "Nightly <run>")
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "<title>Nightly &lt;run&gt;</title>" in page
    assert hostile not in page and "<script" not in page
    assert not re.search(r"<(link|img|iframe|use)[^>]+(src|href)=", page), "nothing fetched"
    # The page is well-formed as XML too, the SVG inside it included.
    boxes, arrows = read_svg(ET.fromstring(page))
    assert arrows == {("start", hostile[:23] + "…")}
    assert boxes[hostile[:23] + "…"]["title"] == hostile


def test_bad_flows_are_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "flow.svg"
    cycle = write_jsonl(
        tmp_path / "cycle.jsonl",
        [
            {"id": "a", "data": {}, "after": ["c"]},
            {"id": "b", "data": {}, "after": ["a"]},
            {"id": "c", "data": {}, "after": ["b"]},
        ],
    )
    assert_user_error(
        run_taskfleet("flow", "show", str(cycle), "-o", str(out)), "cycle", "-> a", "line"
    )
    unknown = write_jsonl(
        tmp_path / "unknown.jsonl",
        [{"id": "a", "data": {}}, {"id": "b", "data": {}, "after": ["nope"]}],
    )
    assert_user_error(
        run_taskfleet("flow", "show", str(unknown), "-o", str(out)),
        "unknown.jsonl: line 2",
        "'nope'",
    )
    assert_user_error(
        run_taskfleet("flow", "show", str(unknown), "-o", str(tmp_path / "flow.png")),
        ".svg or .html",
    )
    assert_user_error(
        run_taskfleet("flow", "show", str(tmp_path / "missing.json"), "-o", str(out)),
        "missing.json",
    )
    assert not out.exists()
