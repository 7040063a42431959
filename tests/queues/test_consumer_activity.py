"""A queue that reports its consumers' activity (`Queue.reports_consumer_activity`): real
worker processes on a real redis-server, each named as on its own machine
(`TASKFLEET_HOSTNAME`), are listed while they work; one killed with SIGKILL drops out, one
stopped with SIGSTOP (a hung machine) stays listed but its activity stops moving. A backend
that does not declare the capability refuses in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskfleet.queues import UnsupportedOperationError, open_queue
from taskfleet.queues.redis import RedisQueue
from taskfleet.tasks import Task

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "parallel_addition" / "worker_addition.py"


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, subprocess.Popen]]]:
    name = f"activity-{uuid.uuid4().hex[:8]}"
    url = f"{redis_url}/0?name={name}"
    queue = open_queue(url)
    queue.send([Task(f"t{i}", {"num1": i, "num2": 1}) for i in range(400)])
    queue.close()
    started: dict[str, subprocess.Popen] = {}
    for host in ("machine-a", "machine-b"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
        env.update(
            PYTHONPATH=str(REPO / "src"),
            TASKFLEET_HOSTNAME=host,
            ADDITION_TASK_DELAY="0.2",
            ADDITION_OUTPUT_DIR=str(tmp_path / "results"),
        )
        started[host] = subprocess.Popen(
            [sys.executable, str(WORKER), "--queue", url, "--num-simultaneous-tasks", "1"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield url, started
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_redis_lists_each_named_worker_and_drops_a_killed_one(
    workers: tuple[str, dict[str, subprocess.Popen]],
) -> None:
    url, started = workers
    queue = open_queue(url)
    assert isinstance(queue, RedisQueue) and queue.reports_consumer_activity
    try:
        _until(lambda: {"machine-a", "machine-b"} <= set(queue.consumer_activity()), 60, "both")
        seen = queue.consumer_activity()
        assert all(time.time() - at < 10 for at in seen.values()), seen
        # a machine that vanishes closes its connections: it is no longer listed
        os.killpg(started["machine-b"].pid, signal.SIGKILL)
        started["machine-b"].wait()
        _until(lambda: "machine-b" not in queue.consumer_activity(), 20, "b to drop out")
        assert "machine-a" in queue.consumer_activity()
        # a hung machine keeps its connection, and its activity stops moving
        os.kill(started["machine-a"].pid, signal.SIGSTOP)
        try:
            _until(
                lambda: time.time() - queue.consumer_activity().get("machine-a", 0) > 4,
                40,
                "a's activity to grow old",
            )
        finally:
            os.kill(started["machine-a"].pid, signal.SIGCONT)
        # and moves again once it runs
        _until(lambda: time.time() - queue.consumer_activity()["machine-a"] < 3, 30, "a again")
    finally:
        queue.close()


def test_a_queue_without_the_capability_refuses_in_one_line(tmp_path: Path) -> None:
    queue = open_queue(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        assert not queue.reports_consumer_activity
        queue.set_consumer("machine-a")  # accepted, and ignored
        with pytest.raises(UnsupportedOperationError, match="report its consumers' activity"):
            queue.consumer_activity()
    finally:
        queue.close()
