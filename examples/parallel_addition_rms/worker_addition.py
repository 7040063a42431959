#!/usr/bin/env python3
"""rms-cloud-tasks' parallel-addition worker, ported to taskfleet by changing its import.

Everything below the import is written the rms-cloud-tasks way: an asyncio entry point that
awaits `worker.start()`, the command line passed as `args=sys.argv[1:]`, and a path object
returned as the task's result (taskfleet records it as its `str()`, with `result_type`).
rms-cloud-tasks' own example builds the path with `filecache.FCPath`, a `pathlib.Path` for
cloud buckets too; this copy uses `pathlib.Path`, so that it needs no package besides
taskfleet.

    python worker_addition.py --task-file ../parallel_addition/addition_tasks.json

Environment: ADDITION_OUTPUT_DIR (default "results"), ADDITION_TASK_DELAY (seconds; negative:
random up to that many).
"""

import asyncio
import multiprocessing
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

from taskfleet import Worker  # was: from cloud_tasks.worker import Worker


def process_task(task_id: str, task_data: dict[str, Any], worker: Worker) -> tuple[bool, Any]:
    """Add the task's two numbers and write the sum to `{task_id}.txt`; return its path."""
    try:
        num1 = task_data.get("num1")
        num2 = task_data.get("num2")
        if num1 is None or num2 is None:
            return True, "Missing required parameters"

        result = num1 + num2

        task_delay = os.getenv("ADDITION_TASK_DELAY")
        if task_delay is not None:
            delay = float(task_delay)
            if delay < 0:
                delay = random.uniform(0, abs(delay))
            time.sleep(delay)

        output_dir = Path(os.getenv("ADDITION_OUTPUT_DIR", "results"))
        output_dir.mkdir(parents=True, exist_ok=True)
        output_file = output_dir / f"{task_id}.txt"
        with output_file.open(mode="w") as f:
            process_id = os.getpid()
            hostname = socket.gethostname()
            worker_id = multiprocessing.current_process().name
            f.write(f"Process {process_id} on {hostname} ({worker_id})\n")
            f.write(f"Task {task_id}: {num1} + {num2} = {result}\n")
            if worker.received_termination_notice:
                f.write("*** Received spot termination signal ***\n")

        return False, output_file

    except Exception as e:
        return False, str(e)


async def main() -> None:
    worker = Worker(process_task, args=sys.argv[1:])
    await worker.start()


if __name__ == "__main__":
    asyncio.run(main())
