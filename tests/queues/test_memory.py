"""What the contract suite cannot see in the memory:// backend: named stores shared within the
process, thread safety, leases by id, and a user's worker run against it in-process."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet import Worker, WorkerData
from taskfleet.queues import QueueNotFoundError, event_queue_url, open_queue
from taskfleet.queues.memory import MemoryQueue, drop_all_stores
from taskfleet.tasks import Task


@pytest.fixture(autouse=True)
def _fresh_stores() -> Iterator[None]:
    drop_all_stores()
    yield
    drop_all_stores()


def tasks(n: int) -> list[Task]:
    return [Task(f"m{i:04d}", {"a": i, "b": 2 * i}) for i in range(n)]


def test_one_name_is_one_queue_in_the_process() -> None:
    first = open_queue("memory://job", max_attempts=2)
    second = open_queue("memory://job", max_attempts=5)
    assert isinstance(first, MemoryQueue)
    assert second.max_attempts == 2  # an existing queue keeps its own
    first.send(tasks(3))
    assert [m.task_id for m in second.receive(10, 30)] == ["m0000", "m0001", "m0002"]
    assert first.stats().leased == 3
    assert repr(first) == "MemoryQueue('memory://job')"


def test_event_queue_is_another_named_store() -> None:
    assert event_queue_url("memory://job?max_attempts=4") == "memory://job-events"
    events = open_queue("memory://job-events")
    events.send([Task("e1", {"event_type": "task_completed"})])
    assert open_queue("memory://job").stats().visible == 0
    assert [m.task_id for m in open_queue("memory://job-events").receive(5, 30)] == ["e1"]


def test_dropping_the_stores_forgets_every_queue() -> None:
    open_queue("memory://job").send(tasks(2))
    drop_all_stores()
    with pytest.raises(QueueNotFoundError, match="no memory queue 'job' in this process"):
        open_queue("memory://job", create=False)
    assert open_queue("memory://job").stats().remaining == 0


def test_bad_urls_name_the_url_and_the_options() -> None:
    with pytest.raises(Exception, match="unknown option\\(s\\) colour; a memory:// queue URL"):
        open_queue("memory://job?colour=red")
    with pytest.raises(Exception, match="at least 1"):
        open_queue("memory://job?max_attempts=0")
    with pytest.raises(Exception, match="queue name ''"):
        open_queue("memory://")


def test_many_threads_lease_each_task_once() -> None:
    queue = open_queue("memory://busy")
    queue.send(tasks(2000))
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def consume() -> None:
        mine = open_queue("memory://busy")
        while batch := mine.receive(7, 30):
            with lock:
                seen.update(m.task_id for m in batch)
            mine.ack(batch)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 2000 and set(seen.values()) == {1}
    stats = queue.stats()
    assert (stats.completed, stats.remaining) == (2000, 0)


def test_leases_by_id_for_release_all_and_resume() -> None:
    queue = open_queue("memory://resume")
    assert queue.lists_leases
    queue.send(tasks(5))
    leased = queue.receive(3, 3600)
    assert queue.leased_ids() == ["m0000", "m0001", "m0002"]
    assert queue.ack_ids(["m0001", "m0004", "unknown"]) == 2  # leased or waiting: done
    assert queue.release_all() == 2
    again = queue.receive(10, 3600)
    assert [(m.task_id, m.attempt) for m in again] == [("m0000", 1), ("m0002", 1), ("m0003", 1)]
    queue.ack(leased)  # stale deliveries of tasks now leased again: the work is done
    assert queue.stats().completed == 4


def add(task_id: str, data: dict[str, Any], worker_data: WorkerData) -> tuple[bool, Any]:
    if data["a"] == 3:
        raise ValueError("three is not welcome")
    return False, data["a"] + data["b"]


def test_a_worker_drains_a_memory_queue_in_this_process(tmp_path: Path) -> None:
    """What a user testing their own worker does: load a memory queue, run the worker on it,
    read the outcome from the queue and its event queue."""
    queue = open_queue("memory://job", max_attempts=1)
    queue.send(tasks(6))
    worker = Worker(
        add,
        args=["--queue", "memory://job", "--num-simultaneous-tasks", "2", "--exit-when-idle", "0"],
        event_log_file=str(tmp_path / "events.jsonl"),
    )
    summary = worker.run(exit=False)
    assert summary.exit_code == 2  # one task was dead-lettered
    assert [(d.task.id, d.attempts) for d in queue.dead_letters()] == [("m0003", 1)]
    assert queue.stats().completed == 5
    events = open_queue("memory://job-events").receive(100, 30)
    kinds = Counter(m.task.data["event_type"] for m in events)
    assert kinds["task_completed"] == 5
    assert kinds["task_exception"] == 1
