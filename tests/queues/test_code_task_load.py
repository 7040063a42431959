"""100,000 code-tasks through `TaskQueue`: inserted from a generator into sqlite, redis and fq
(and inserted again: nothing the second time), then polled by two processes at once. Every
task must run, and the tasks run twice (at-least-once delivery) are counted, not hidden."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from taskfleet.api.task_queue import TaskQueue

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N = 100_000
POLLER = """
import sys
from taskfleet import TaskQueue
counts = TaskQueue(sys.argv[1]).poll(lease_seconds=30, idle_seconds=3, event_log_file=sys.argv[2])
print(counts.completed, counts.dead_lettered)
"""


@pytest.fixture(params=["sqlite", "redis", "fq"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"code{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db?name={name}"
    if request.param == "fq":
        return f"fq://{tmp_path}/{name}"
    return f"{request.getfixturevalue('redis_url')}/0?name={name}"


def code_tasks() -> Any:
    from tests.api.sample_tasks import add

    return (add.task(i, 1) for i in range(N))


def test_100k_code_tasks_inserted_from_a_generator_run_once_on_two_pollers(
    queue_url: str, tmp_path: Path, record_property: Any
) -> None:
    tq = TaskQueue(queue_url)
    assert (tq.insert(code_tasks(), total=N).inserted, tq.enqueued) == (N, N)
    assert tq.insert(code_tasks()).already_present == N
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"}
    pollers = [
        subprocess.Popen(
            [sys.executable, "-c", POLLER, queue_url, str(tmp_path / f"events-{i}.jsonl")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    ran = []
    for poller in pollers:
        out, err = poller.communicate(timeout=280)
        assert poller.returncode == 0, err.decode()[-2000:]
        completed, dead = map(int, out.split())
        assert dead == 0
        ran.append(completed)
    per_task: Counter[str] = Counter()
    for i in range(2):
        for line in (tmp_path / f"events-{i}.jsonl").read_bytes().splitlines():
            event = orjson.loads(line)
            if event["event_type"] == "task_completed":
                per_task[event["task_id"]] += 1
    assert set(per_task) == {t.id for t in code_tasks()}
    duplicates = sum(per_task.values()) - N
    assert sum(ran) == N + duplicates
    assert all(ran), f"one poller ran nothing: {ran}"
    assert (tq.enqueued, tq.leased, tq.dead, tq.completed) == (0, 0, 0, N)
    record_property("duplicates", duplicates)
    print(f"tasks per poller {ran}; tasks run more than once: {duplicates}")
