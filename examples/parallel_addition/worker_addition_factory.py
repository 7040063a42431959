"""The addition example with tasks made by a Python generator instead of read from a file.

    ADDITION_MAX_TASKS=1000 python worker_addition_factory.py

The factory is called once per run; its tasks go through the same resumable embedded queue as
a task file, so Ctrl-C and a rerun finish only what is left (the factory must yield the same
ids each time for that).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

from worker_addition import process_task

from taskfleet import Worker


def addition_tasks() -> Iterator[dict]:
    count = int(os.environ.get("ADDITION_MAX_TASKS", "100"))
    rng = random.Random(42)
    for i in range(1, count + 1):
        yield {
            "id": f"addition-task-{i:06d}",
            "data": {"num1": rng.randint(-99999, 99999), "num2": rng.randint(-99999, 99999)},
        }


if __name__ == "__main__":
    Worker(process_task, task_source=addition_tasks).run()
