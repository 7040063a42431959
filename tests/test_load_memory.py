"""A 1,000,000-task JSONL file loads through `taskfleet load-queue` in bounded memory.

The load runs as a real process and its own peak RSS comes from `wait4`. The bound is the
issue's: under 150 MB. What would break it:
reading the file whole (the file alone is 55 MB, its parsed objects several times that), keeping
every task or id string for the duplicate check, or building all rows before inserting them.
Time is not asserted here; `benchmarks/bench_load.py` prints the speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers_taskfiles import TASKFLEET_SCRIPT, sqlite_url
from taskfleet.queues.sqlite import SQLiteQueue

TASKS = 1_000_000
PEAK_RSS_LIMIT_MB = 150


def write_tasks(path: Path, count: int) -> None:
    with path.open("w") as f:
        for start in range(0, count, 50_000):
            f.write(
                "".join(
                    f'{{"id": "task-{i:07d}", "data": {{"num1": {i % 99991}, "num2": {-i}}}}}\n'
                    for i in range(start, min(count, start + 50_000))
                )
            )


def test_million_task_jsonl_loads_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, TASKS)
    db = tmp_path / "queue.db"
    # A process's peak RSS counts the pages it shared with its parent at fork (Linux keeps
    # the high-water mark across exec), and pytest's own RSS is large. So a tiny fresh Python
    # forks the load and reports its peak from wait4.
    peak_file = tmp_path / "peak-kb"
    trampoline = (
        "import os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.argv[2], sys.argv[2:])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    command = [str(TASKFLEET_SCRIPT), "load-queue", "--queue", sqlite_url(db), "--task-file"]
    proc = subprocess.run(
        [sys.executable, "-c", trampoline, str(peak_file), *command, str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"inserted {TASKS:,}, already present 0" in proc.stdout
    peak_mb = int(peak_file.read_text()) / 1024  # kilobytes on Linux
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
    with SQLiteQueue(db) as queue:
        stats = queue.stats()
        assert (stats.inserted, stats.visible) == (TASKS, TASKS)
        first = queue.receive(2, lease_seconds=60)
        assert [m.task_id for m in first] == ["task-0000000", "task-0000001"]
