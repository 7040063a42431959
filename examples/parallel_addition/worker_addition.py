"""The parallel-addition example: add two numbers per task and write the sum to a file.

Run locally (resumable: Ctrl-C and run again to finish what is left):
    python worker_addition.py --task-file addition_tasks.json

Environment:
    ADDITION_OUTPUT_DIR   where result files go (default "results"): a folder, or a cloud
                          storage prefix such as gs://bucket/prefix or s3://bucket/prefix
    ADDITION_TASK_DELAY   seconds each task sleeps; negative: random up to that many
"""

from __future__ import annotations

import os
import random
import socket
import time

from taskfleet import Worker, WorkerData, storage


def process_task(task_id: str, task_data: dict, worker_data: WorkerData) -> tuple[bool, str]:
    num1, num2 = task_data["num1"], task_data["num2"]
    delay = float(os.environ.get("ADDITION_TASK_DELAY", "0") or 0)
    if delay < 0:
        delay = random.uniform(0, -delay)
    if delay:
        time.sleep(delay)
    lines = [
        f"Process {os.getpid()} on {socket.gethostname()}",
        f"{num1} + {num2} = {num1 + num2}",
    ]
    if worker_data.received_termination_notice:
        lines.append("A termination notice arrived while this task ran")
    # A local file is written whole through a temporary name; a cloud object is uploaded whole.
    path = storage.join(os.environ.get("ADDITION_OUTPUT_DIR") or "results", f"{task_id}.txt")
    storage.write_text(path, "\n".join(lines) + "\n")
    return False, path


if __name__ == "__main__":
    Worker(process_task).run()
