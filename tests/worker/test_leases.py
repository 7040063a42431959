"""Leases of running tasks are renewed, so a task may outlive the queue's lease length without
being handed to a second consumer; a worker that dies lets its tasks go when leases expire."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.worker.helpers import read_events, start_worker

from taskfleet.queues import open_queue
from taskfleet.tasks import Task


def test_running_task_keeps_its_lease_past_the_lease_length(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    queue = open_queue(url)
    queue.send([Task("long", {"action": "sleep", "seconds": 3.5})])
    proc = start_worker(tmp_path, "--queue", url, "--lease-seconds", "1", "--exit-when-idle", "1")
    try:
        # Wait for the worker to take the task (its start-up time varies with the machine's
        # load), then try to steal it for 2.5 s: more than twice the lease, within the task.
        deadline = time.monotonic() + 30
        while queue.stats().leased == 0:
            assert time.monotonic() < deadline, "the worker never took the task"
            time.sleep(0.02)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            stolen = queue.receive(1, lease_seconds=30)
            assert not stolen, "the running task's lease expired and it was delivered again"
            time.sleep(0.2)
    finally:
        proc.communicate(timeout=30)
        queue.close()
    assert proc.returncode == 0
    done = [
        e for e in read_events(tmp_path / "events.jsonl") if e["event_type"] == "task_completed"
    ]
    assert [(e["task_id"], e["attempt"]) for e in done] == [("long", 1)]


def test_a_killed_workers_tasks_return_when_the_lease_expires(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    queue = open_queue(url)
    queue.send([Task("stuck", {"action": "sleep", "seconds": 60})])
    proc = start_worker(tmp_path, "--queue", url, "--lease-seconds", "1")
    deadline = time.monotonic() + 10
    while queue.stats().leased == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    time.sleep(1.2)
    (message,) = queue.receive(1, lease_seconds=30)
    assert message.task_id == "stuck" and message.attempt == 2
    queue.close()
