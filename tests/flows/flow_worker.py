"""A worker for the flow tests: each task adds its own `n` to the totals its dependencies
returned, and says when it started.

Task data: {"n": int, "sleep": seconds, "fail_unless": path, "wait_for": path}. A task with
`fail_unless` raises until that file exists (the "fix" a test makes before a redrive); one with
`wait_for` runs until that file exists (up to a minute), so a test can look at a flow while
the task runs. Each start appends
`task_id attempt time pid` to the file $FLOW_STARTS, so a test can check that no task started
before its dependencies completed and that each ran once. With $FLOW_LOAD set to a task file,
the script first loads it into the queue given by --queue (how a memory:// queue, which lives
in this process, gets its tasks).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from taskfleet import Worker, WorkerData


def process_task(task_id: str, data: dict, worker_data: WorkerData) -> tuple[bool, object]:
    with open(os.environ["FLOW_STARTS"], "a") as f:
        f.write(f"{task_id} {worker_data.attempt} {time.time():.6f} {os.getpid()}\n")
    if data.get("sleep"):
        time.sleep(data["sleep"])
    go = data.get("wait_for")
    deadline = time.monotonic() + 60
    while go and not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    fix = data.get("fail_unless")
    if fix and not Path(fix).exists():
        raise RuntimeError(f"{task_id} is broken until {fix} exists")
    waited = worker_data.dependency_results or {}
    total = data.get("n", 0) + sum(result["total"] for result in waited.values())
    return False, {"total": total, "inputs": sorted(waited)}


if __name__ == "__main__":
    to_load = os.environ.get("FLOW_LOAD")
    if to_load:
        from taskfleet.queues import open_queue
        from taskfleet.tasks.loading import load_tasks_into

        url = sys.argv[sys.argv.index("--queue") + 1]
        load_tasks_into(open_queue(url), to_load)
    Worker(process_task).run()
