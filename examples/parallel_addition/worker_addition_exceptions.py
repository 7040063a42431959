"""The addition example with deliberate failures, to see retries and dead letters at work.

Environment (probabilities between 0 and 1, per task attempt):
    ADDITION_EXCEPTION_PROBABILITY   raise an exception
    ADDITION_TIMEOUT_PROBABILITY     sleep forever (killed at --max-runtime)
    ADDITION_EXIT_PROBABILITY        sys.exit(2)
plus ADDITION_OUTPUT_DIR and ADDITION_TASK_DELAY as in worker_addition.py.

    python worker_addition_exceptions.py --task-file addition_tasks.json --max-runtime 5 \
        --retry-on-exception --retry-on-timeout
"""

from __future__ import annotations

import os
import random
import sys
import time

from worker_addition import process_task as add_numbers

from taskfleet import Worker, WorkerData


def _probability(name: str) -> float:
    return float(os.environ.get(name, "0") or 0)


def process_task(task_id: str, task_data: dict, worker_data: WorkerData) -> tuple[bool, str]:
    if random.random() < _probability("ADDITION_EXCEPTION_PROBABILITY"):
        raise RuntimeError(f"simulated failure in {task_id}")
    if random.random() < _probability("ADDITION_TIMEOUT_PROBABILITY"):
        while True:
            time.sleep(60)
    if random.random() < _probability("ADDITION_EXIT_PROBABILITY"):
        sys.exit(2)
    return add_numbers(task_id, task_data, worker_data)


if __name__ == "__main__":
    Worker(process_task).run()
