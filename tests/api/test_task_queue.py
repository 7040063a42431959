"""`TaskQueue(url)`: inserting from generators, counts, `poll` on the runtime's policy, and the
queue as a whole, on the embedded SQLite queue, a shared-filesystem queue and a memory queue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from tests.api.sample_tasks import Multiply, add, fail

from taskfleet.api.task_queue import Count, TaskQueue
from taskfleet.errors import TaskfleetError
from taskfleet.queues import QueueNotFoundError, SendInterrupted
from taskfleet.queues.memory import drop_all_stores


@pytest.fixture(params=["sqlite", "fq", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db"
    elif request.param == "fq":
        yield f"fq://{tmp_path}/q"
    else:
        yield f"memory://api{uuid.uuid4().hex[:8]}"
        drop_all_stores()


def test_insert_streams_a_generator_and_inserts_nothing_the_second_time(url: str) -> None:
    tq = TaskQueue(url)
    first = tq.insert((add.task(i, i) for i in range(500)), total=500)
    again = tq.insert(add.task(i, i) for i in range(500))
    assert (first.inserted, first.already_present) == (500, 0)
    assert (again.inserted, again.already_present) == (0, 500)
    assert tq.insert(Multiply(3)).inserted == 1  # one task alone works too
    assert (tq.enqueued, tq.inserted, tq.completed, tq.leased, tq.dead) == (501, 501, 0, 0, 0)
    assert isinstance(tq.enqueued, Count) and not tq.enqueued.approximate


def test_poll_runs_every_task_in_this_process(url: str, tmp_path: Path) -> None:
    tq = TaskQueue(url)
    tq.insert(add.task_with_id(f"add-{i}", i, 1) for i in range(40))
    tq.insert(
        [{"id": "plain-dict", "data": {"call": "tests.api.sample_tasks:add", "args": [1, 2]}}]
    )
    events = tmp_path / "events.jsonl"
    counts = tq.poll(lease_seconds=30, idle_seconds=0.2, event_log_file=str(events))
    assert (counts.completed, counts.dead_lettered) == (41, 0)
    assert (tq.enqueued, tq.completed) == (0, 41)
    results = {
        e["task_id"]: e["result"]
        for e in map(orjson.loads, events.read_bytes().splitlines())
        if e["event_type"] == "task_completed"
    }
    assert results["add-7"] == 8 and results["plain-dict"] == 3


def test_poll_stops_at_max_tasks_and_when_stop_fn_says_so(url: str) -> None:
    tq = TaskQueue(url)
    tq.insert(add.task(i, 0) for i in range(40))
    assert tq.poll(max_tasks=5).completed == 5
    seen: list[int] = []

    def stop(executed: int) -> bool:
        seen.append(executed)
        return executed >= 10

    counts = tq.poll(stop_fn=stop)  # short tasks are leased in batches; it stops mid-batch
    assert counts.completed == 10 and seen[-1] == 10
    assert tq.enqueued == 25 and tq.leased == 0  # the rest of the batch was given back


def test_a_message_naming_an_unmarked_function_is_dead_lettered(url: str) -> None:
    tq = TaskQueue(url)
    tq.insert({"id": "evil", "data": {"call": "os:system", "args": ["echo owned"], "kwargs": {}}})
    tq.insert({"id": "sneaky", "data": {"call": "tests.api.sample_tasks:unmarked", "args": [1]}})
    counts = tq.poll(idle_seconds=0.2, retry_on_exception=True)
    assert counts.dead_lettered == 2
    letters = {d.task.id: d for d in tq.dead_letters()}
    assert set(letters) == {"evil", "sneaky"}
    assert "NotATaskError: refused to run os:system" in (letters["evil"].error or "")
    assert letters["evil"].attempts == 1  # refused at once, not retried


def test_failures_follow_the_worker_policy(url: str) -> None:
    tq = TaskQueue(url, max_attempts=2)
    tq.insert(fail.task_with_id("boom", "no"))
    counts = tq.poll(idle_seconds=2, retry_on_exception=True, backoff_base=0, backoff_cap=0)
    assert (counts.failed_attempts, counts.retried, counts.dead_lettered) == (2, 1, 1)
    (letter,) = tq.dead_letters()
    assert (letter.attempts, letter.error) == (2, "ValueError: no")
    assert tq.redrive() == 1 and tq.enqueued == 1


def test_lease_delete_release_all_and_purge(url: str) -> None:
    tq = TaskQueue(url)
    tq.insert(add.task(i, 1) for i in range(3))
    message = tq.lease(seconds=30)
    assert message is not None and tq.leased == 1
    tq.delete(message)
    assert (tq.completed, tq.enqueued) == (1, 2)
    assert tq.lease(30) is not None and tq.release_all() == 1 and tq.leased == 0
    tq.delete(add.task(1, 1))  # by the task itself
    assert tq.enqueued == 1
    tq.purge()
    assert (tq.enqueued, tq.inserted) == (0, 0)


def test_reading_a_queue_that_does_not_exist_says_so(tmp_path: Path) -> None:
    for missing in (f"sqlite:///{tmp_path}/nothing.db", f"fq://{tmp_path}/nothing"):
        with pytest.raises(QueueNotFoundError):
            TaskQueue(missing).poll(max_tasks=1)
    assert not (tmp_path / "nothing").exists()


def test_approximate_counts_are_labelled() -> None:
    assert repr(Count(5, approximate=True)) == "~5" and Count(5, approximate=True) == 5
    assert repr(Count(5)) == "5"


def test_an_item_that_is_not_a_task_stops_the_insert_after_those_before_it(url: str) -> None:
    def items() -> Iterator[object]:
        yield from (add.task(i, 0) for i in range(2500))  # more than one chunk
        yield 42

    tq = TaskQueue(url)
    with pytest.raises(TaskfleetError, match="cannot insert 42") as info:
        tq.insert(items())
    inserted = info.value.inserted if isinstance(info.value, SendInterrupted) else 0
    # all or nothing (SQLite, memory), or exactly what SendInterrupted says went in (fq)
    assert tq.enqueued == inserted <= 2500
