"""A queue that reports its consumers' activity (`Queue.reports_consumer_activity`): real
worker processes, each named as on its own machine (`TASKFLEET_HOSTNAME`), on a real
redis-server, an fq:// directory and a SQLite file, are listed while they work; one killed
with SIGKILL stops moving (Redis drops it: its connections closed), one stopped with SIGSTOP
(a hung machine) stays listed but its activity stops moving, and moves again once it runs. A
backend that does not declare the capability refuses in one line.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskfleet.queues import Queue, UnsupportedOperationError, open_queue
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


@pytest.fixture(params=["redis", "fq", "sqlite"])
def workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, subprocess.Popen]]]:
    name = f"activity-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        url = f"{request.getfixturevalue('redis_url')}/0?name={name}"
    elif request.param == "fq":
        url = f"fq://{tmp_path / name}"
    else:
        url = f"sqlite:///{tmp_path / 'queue.db'}?name={name}"
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


def _age(queue: Queue, consumer: str) -> float:
    """Seconds since the consumer's last activity (infinite: not listed)."""
    return time.time() - queue.consumer_activity().get(consumer, -math.inf)


def test_each_named_worker_is_listed_and_a_dead_or_hung_one_stops_moving(
    workers: tuple[str, dict[str, subprocess.Popen]],
) -> None:
    url, started = workers
    queue = open_queue(url)
    assert queue.reports_consumer_activity
    try:
        _until(lambda: {"machine-a", "machine-b"} <= set(queue.consumer_activity()), 60, "both")
        seen = queue.consumer_activity()
        assert all(time.time() - at < 10 for at in seen.values()), seen
        # a machine that vanishes shows no more activity (on Redis it is no longer listed:
        # its connections closed)
        os.killpg(started["machine-b"].pid, signal.SIGKILL)
        started["machine-b"].wait()
        _until(lambda: _age(queue, "machine-b") > 4, 30, "b's activity to grow old")
        if isinstance(queue, RedisQueue):
            assert "machine-b" not in queue.consumer_activity()
        assert _age(queue, "machine-a") < 4
        # a hung machine stays (its connection, its file, its row), and its activity stops
        os.kill(started["machine-a"].pid, signal.SIGSTOP)
        try:
            _until(lambda: _age(queue, "machine-a") > 4, 40, "a's activity to grow old")
            assert "machine-a" in queue.consumer_activity()
        finally:
            os.kill(started["machine-a"].pid, signal.SIGCONT)
        # and moves again once it runs
        _until(lambda: _age(queue, "machine-a") < 3, 30, "a's activity again")
    finally:
        queue.close()


def test_a_queue_without_the_capability_refuses_in_one_line() -> None:
    queue = open_queue("memory://activity")
    try:
        assert not queue.reports_consumer_activity
        queue.set_consumer("machine-a")  # accepted, and ignored
        with pytest.raises(UnsupportedOperationError, match="report its consumers' activity"):
            queue.consumer_activity()
    finally:
        queue.close()
