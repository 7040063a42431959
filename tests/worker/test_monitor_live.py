"""`taskfleet monitor --follow` watching a real worker run, and `monitor --queue` draining the
event queue that a real worker draining a queue writes to."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.worker.helpers import start_worker, write_tasks

from taskfleet.queues import open_queue
from taskfleet.tasks import Task

TASKFLEET = [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def test_monitor_follows_a_running_worker(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i:02d}", "data": {"action": "sleep", "seconds": 0.15}} for i in range(24)]
    tasks.append({"id": "boom", "data": {"action": "raise"}})
    write_tasks(tmp_path / "tasks.json", tasks)
    worker = start_worker(tmp_path, "--task-file", "tasks.json", "--num-simultaneous-tasks", "2")
    time.sleep(0.5)  # the worker is running: the monitor starts on a file that is still growing
    monitor = subprocess.run(
        [*TASKFLEET, "monitor", "events.jsonl", "--follow", "--task-file", "tasks.json",
         "--exit-when-done", "--json", "--refresh", "0.2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    worker.communicate(timeout=60)
    assert worker.returncode == 2  # "boom" was dead-lettered
    assert monitor.returncode == 0, monitor.stderr
    summary = json.loads(monitor.stdout)
    assert summary["tasks_completed"] == 24
    assert summary["dead_letters"] == 1
    assert summary["tasks_not_completed"] == 1


def test_monitor_drains_the_event_queue_of_a_queue_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'job.db'}"
    with open_queue(url) as queue:  # type: ignore[attr-defined]
        queue.send([Task(f"q{i}", {"action": "ok"}) for i in range(30)])
    write_tasks(tmp_path / "tasks.json", [{"id": f"q{i}", "data": {}} for i in range(30)])
    worker = start_worker(tmp_path, "--queue", url, "--exit-when-idle", "0.5")
    worker.communicate(timeout=60)
    assert worker.returncode == 0
    monitor = subprocess.run(
        [*TASKFLEET, "monitor", "--queue", url, "-o", "copied.jsonl", "--task-file",
         "tasks.json", "--exit-when-done", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert monitor.returncode == 0, monitor.stderr
    assert json.loads(monitor.stdout)["tasks_completed"] == 30
    copied = (tmp_path / "copied.jsonl").read_text().splitlines()
    assert sum('"task_completed"' in line for line in copied) == 30
