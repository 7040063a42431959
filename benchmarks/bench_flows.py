"""Benchmark flows: 100,000 tasks as 1,000 groups (1 prepare -> 98 parts -> 1 aggregate)
against the same 100,000 tasks without dependencies, measured in the same run.

Prints figures; it is not a timed test (timings on a shared machine are too noisy to assert).

1. Load into a fresh SQLite queue (`load_tasks_into`, what `taskfleet load-queue` does, in this
   process): tasks/s of the flow and of the flat file, and their ratio.
2. A local run (`Worker(...).run()` on `--task-file`, 2 simultaneous tasks, a task that does
   nothing but return 1; the aggregate reads its 98 dependency results): tasks/s of the whole
   run (load included) for the flow and the flat file, and their ratio.

Each measure is taken `--repeat` times, alternating flat and flow, and the best of each kept.
Targets (issue 13): local run >= 0.8x the flat run's throughput; load >= 0.5x the flat load.

    python benchmarks/bench_flows.py [--groups 1000] [--width 98] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from taskfleet import Worker, WorkerData
from taskfleet.queues import open_queue
from taskfleet.tasks.loading import load_tasks_into

RUN_RATIO_TARGET = 0.8
LOAD_RATIO_TARGET = 0.5


def write_files(folder: Path, groups: int, width: int) -> tuple[Path, Path]:
    """The flow and the same tasks flat, as JSON Lines."""
    flow, flat = folder / "flow.jsonl", folder / "flat.jsonl"
    with flow.open("wb") as f_flow, flat.open("wb") as f_flat:
        for g in range(groups):
            prep = f"g{g:04d}-prepare"
            parts = [f"g{g:04d}-part-{i:03d}" for i in range(width)]
            rows: list[dict[str, Any]] = [{"id": prep, "data": {"g": g}}]
            rows += [{"id": p, "data": {"g": g}, "after": [prep]} for p in parts]
            rows.append({"id": f"g{g:04d}-aggregate", "data": {"g": g}, "after": parts})
            for row in rows:
                f_flow.write(orjson.dumps(row) + b"\n")
                f_flat.write(orjson.dumps({"id": row["id"], "data": row["data"]}) + b"\n")
    return flow, flat


def nothing(task_id: str, data: dict[str, Any], worker_data: WorkerData) -> tuple[bool, int]:
    """The task: no work, so the runtime's own cost is what is measured; an aggregate checks
    that it got every result it waits for."""
    results = worker_data.dependency_results
    return False, 1 if results is None else sum(results.values())


def bench_load(path: Path, workdir: Path) -> float:
    """Tasks/s of a load into a fresh SQLite queue."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    queue = open_queue(f"sqlite:///{folder}/queue.db")
    start = time.perf_counter()
    result = load_tasks_into(queue, str(path))
    elapsed = time.perf_counter() - start
    queue.close()
    return result.inserted / elapsed


def bench_run(path: Path, workdir: Path, tasks: int) -> float:
    """Tasks/s of a local run of the task file (its load included)."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    os.chdir(folder)
    start = time.perf_counter()
    summary = Worker(
        nothing,
        args=[
            "--task-file",
            str(path),
            "--num-simultaneous-tasks",
            "2",
            "--event-log-file",
            str(folder / "events.jsonl"),
        ],
    ).run(exit=False)
    elapsed = time.perf_counter() - start
    assert summary.counts.completed == tasks, summary
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--width", type=int, default=98)
    parser.add_argument("--repeat", type=int, default=2)
    options = parser.parse_args()
    tasks = options.groups * (options.width + 2)
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp:
        workdir = Path(tmp)
        flow, flat = write_files(workdir, options.groups, options.width)
        loads: dict[str, float] = {"flat": 0.0, "flow": 0.0}
        runs: dict[str, float] = {"flat": 0.0, "flow": 0.0}
        for _ in range(options.repeat):
            for name, path in (("flat", flat), ("flow", flow)):
                loads[name] = max(loads[name], bench_load(path, workdir))
        for _ in range(options.repeat):
            for name, path in (("flat", flat), ("flow", flow)):
                runs[name] = max(runs[name], bench_run(path, workdir, tasks))
        os.chdir(workdir.parent)
    load_ratio = loads["flow"] / loads["flat"]
    run_ratio = runs["flow"] / runs["flat"]
    print(f"{tasks:,} tasks: {options.groups:,} groups of 1 prepare -> {options.width} parts -> 1")
    print(f"{'measure':<40}{'value':>14}  target")
    print(f"{'load into sqlite, flat':<40}{loads['flat']:>12,.0f}/s")
    print(f"{'load into sqlite, flow':<40}{loads['flow']:>12,.0f}/s")
    verdict = "ok" if load_ratio >= LOAD_RATIO_TARGET else "MISSED"
    print(f"{'load, flow / flat':<40}{load_ratio:>13.2f}x  >= {LOAD_RATIO_TARGET}x {verdict}")
    print(f"{'local run, flat':<40}{runs['flat']:>12,.0f}/s")
    print(f"{'local run, flow':<40}{runs['flow']:>12,.0f}/s")
    verdict = "ok" if run_ratio >= RUN_RATIO_TARGET else "MISSED"
    print(f"{'local run, flow / flat':<40}{run_ratio:>13.2f}x  >= {RUN_RATIO_TARGET}x {verdict}")


if __name__ == "__main__":
    main()
