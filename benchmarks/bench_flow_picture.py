"""Benchmark: drawing a big flow (`taskfleet flow show`) against reading its task file.

Two flows, each written once as JSONL in --workdir:
- fan: 1 prepare -> 9,998 chunks -> 1 aggregate (10,000 tasks: three boxes once grouped);
- groups: 1,000 groups of 1 prepare -> 98 parts -> 1 aggregate (100,000 tasks: 3,000 boxes).

For each, in the same run and the same process (best of --repeat): the baseline is reading
the file with `iter_tasks` (what every command that takes a task file pays); then the picture's
steps, reading with the graph check (`read_flow`), layout, and the SVG text. Printed as seconds
and as ratios to the baseline, so figures from a shared machine compare.

Then the report: `report.collect` of one completion event per task with the flow's task file
(the graph and every task's state) against the same events with the same tasks without
`after` (the report of a flat job, which draws no graph).

    python benchmarks/bench_flow_picture.py
    python benchmarks/bench_flow_picture.py --repeat 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from taskfleet.flows.drawing import flow_svg
from taskfleet.flows.layout import layout_flow
from taskfleet.flows.reading import read_flow
from taskfleet.tasks import iter_tasks


def write_fan(path: Path, chunks: int = 9_998) -> None:
    names = [f"chunk-{i:05d}" for i in range(chunks)]
    with open(path, "wb") as f:
        f.write(orjson.dumps({"id": "prepare", "data": {}}) + b"\n")
        for i, name in enumerate(names):
            f.write(orjson.dumps({"id": name, "data": {"i": i}, "after": ["prepare"]}) + b"\n")
        f.write(orjson.dumps({"id": "aggregate", "data": {}, "after": names}) + b"\n")


def write_groups(path: Path, groups: int = 1_000, parts: int = 98) -> None:
    with open(path, "wb") as f:
        for g in range(groups):
            prepare = f"g{g:04d}-prepare"
            names = [f"g{g:04d}-part-{p:03d}" for p in range(parts)]
            f.write(orjson.dumps({"id": prepare, "data": {"g": g}}) + b"\n")
            for p, name in enumerate(names):
                entry = {"id": name, "data": {"g": g, "p": p}, "after": [prepare]}
                f.write(orjson.dumps(entry) + b"\n")
            entry = {"id": f"g{g:04d}-aggregate", "data": {"g": g}, "after": names}
            f.write(orjson.dumps(entry) + b"\n")


def best(repeat: int, step: Callable[[], Any]) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - started)
    return min(times), value


def measure(path: Path, repeat: int) -> None:
    read_s, count = best(repeat, lambda: sum(1 for _ in iter_tasks(path)))
    check_s, flow = best(repeat, lambda: read_flow(path))
    layout_s, layout = best(repeat, lambda: layout_flow(flow.ids, flow.after))
    svg_s, svg = best(repeat, lambda: flow_svg(layout))
    total = check_s + layout_s + svg_s
    print(
        f"{path.name}: {count:,} tasks -> {len(layout.nodes):,} boxes, {len(layout.edges):,} "
        f"arrows, SVG {len(svg) / 1e6:.2f} MB"
    )
    print(f"  read the file (baseline)   {read_s:7.3f} s   1.00x")
    print(f"  read + graph check         {check_s:7.3f} s   {check_s / read_s:.2f}x")
    print(f"  layout                     {layout_s:7.3f} s   {layout_s / read_s:.2f}x")
    print(f"  SVG text                   {svg_s:7.3f} s   {svg_s / read_s:.2f}x")
    print(f"  whole picture              {total:7.3f} s   {total / read_s:.2f}x")


def measure_report(flow_path: Path, workdir: Path, repeat: int) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers_events import ev, write_events
    from taskfleet.monitoring.report import collect

    flat_path = workdir / f"flat-{flow_path.name}"
    events_path = workdir / f"events-{flow_path.stem}.jsonl"
    if not flat_path.exists() or not events_path.exists():
        ids = [task.id for task in iter_tasks(flow_path)]
        flat_path.write_bytes(b"".join(orjson.dumps({"id": i, "data": {}}) + b"\n" for i in ids))
        write_events(
            events_path,
            (
                ev("task_completed", n / 1000, task_id=i, attempt=1, worker_id=1, elapsed_time=0.1)
                for n, i in enumerate(ids)
            ),
        )
    flat_s, _ = best(repeat, lambda: collect([events_path], str(flat_path)))
    flow_s, data = best(repeat, lambda: collect([events_path], str(flow_path)))
    print(f"report of {flow_path.name} ({data.summary.events:,} events):")
    print(f"  flat task file, no graph (baseline) {flat_s:7.3f} s   1.00x")
    print(f"  flow task file, graph and states    {flow_s:7.3f} s   {flow_s / flat_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/taskfleet-bench-flow"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    fan, groups = args.workdir / "fan-10k.jsonl", args.workdir / "groups-100k.jsonl"
    if not fan.exists():
        write_fan(fan)
    if not groups.exists():
        write_groups(groups)
    for path in (fan, groups):
        measure(path, args.repeat)
    measure_report(groups, args.workdir, args.repeat)


if __name__ == "__main__":
    main()
