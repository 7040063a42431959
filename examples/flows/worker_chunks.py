"""The chunks flow as a task file: prepare -> 4 chunks -> aggregate, one worker script.

Each task's data names its step. `prepare` makes the numbers (seeded, so every run makes the
same ones) and returns them; each `chunk` reads them from `worker_data.dependency_results`,
takes its share and returns its sum; `aggregate` adds the chunks' sums and writes the total.

Run locally (resumable: Ctrl-C and run again to finish what is left):
    python worker_chunks.py --task-file chunks.flow        # or chunks_tasks.json

Environment:
    CHUNKS_OUTPUT_DIR   where total.json goes (default "results")
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from taskfleet import Worker, WorkerData


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(data["seed"])
    return {"numbers": [rng.randint(1, 1000) for _ in range(data["count"])]}


def chunk(data: dict[str, Any], results: dict[str, Any]) -> dict[str, int]:
    (prepared,) = results.values()  # a chunk waits for prepare only
    mine = prepared["numbers"][data["index"] :: data["of"]]
    return {"index": data["index"], "count": len(mine), "sum": sum(mine)}


def aggregate(results: dict[str, Any]) -> dict[str, int]:
    total = {
        "chunks": len(results),
        "count": sum(part["count"] for part in results.values()),
        "sum": sum(part["sum"] for part in results.values()),
    }
    out = Path(os.environ.get("CHUNKS_OUTPUT_DIR") or "results")
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / "total.json.tmp"
    temporary.write_text(json.dumps(total) + "\n")
    temporary.replace(out / "total.json")  # whole or not at all
    return total


def process_task(task_id: str, task_data: dict, worker_data: WorkerData) -> tuple[bool, Any]:
    results = dict(worker_data.dependency_results or {})
    step = task_data["step"]
    if step == "prepare":
        return False, prepare(task_data)
    if step == "chunk":
        return False, chunk(task_data, results)
    if step == "aggregate":
        return False, aggregate(results)
    raise ValueError(f"task {task_id}: unknown step {step!r}")


if __name__ == "__main__":
    Worker(process_task).run()
