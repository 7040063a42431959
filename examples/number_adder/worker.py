"""The number-adder worker: `num1 + num2` into `results/{task_id}.out`.

    python worker.py --task-file tasks.json                # on a laptop
    python worker.py --queue sqs://adder?region=us-west-2  # on a cloud VM

Workers written for rms-cloud-tasks port by changing one import: the signature of
`process_task` and its `(retry, result)` return value are the same.
"""

from __future__ import annotations

import os
from pathlib import Path

from taskfleet import Worker, WorkerData


def process_task(task_id: str, task_data: dict, worker_data: WorkerData) -> tuple[bool, str]:
    total = task_data["num1"] + task_data["num2"]
    results = Path(os.environ.get("NUMBER_ADDER_OUTPUT_DIR") or "results")
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{task_id}.out"
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(f"{total}\n")
    os.replace(tmp, out)  # atomic: never a half-written result
    return False, str(total)


if __name__ == "__main__":
    Worker(process_task).run()
