"""The attempt owner, directly: the retry policy, the backoff, and every decision it carries out
(ack, retry, dead letter, dead letters a queue reports, a retry the queue refuses), on a real
SQLite queue in a temporary folder and a real events file."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.worker.helpers import read_events

from taskfleet.events.schema import FIELDS, EventType
from taskfleet.events.sinks import EventSink, FileEventSink
from taskfleet.queues.base import Message
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task
from taskfleet.worker.attempts import (
    RETRY_ASKED,
    SETTLE_INTERVAL,
    SETTLE_MAX,
    Action,
    Attempts,
    RetryPolicy,
    RunCounts,
    backoff_delay,
)
from taskfleet.worker.settings import WorkerSettings

LONG = 3600.0  # a lease that stays live for the whole test
HOST = "test-host"


def policy(**changes: object) -> RetryPolicy:
    values: dict[str, object] = {
        "max_attempts": 3,
        "retry_on_exit": True,
        "retry_on_exception": False,
        "retry_on_timeout": False,
        "backoff_base": 60.0,  # long: a retried task stays delayed while the test looks
        "backoff_cap": 300.0,
    }
    values.update(changes)
    return RetryPolicy(**values)  # type: ignore[arg-type]


# -- the retry policy and the backoff ---------------------------------------------------------


def test_policy_retries_while_wanted_and_attempts_remain() -> None:
    p = policy(max_attempts=3)
    assert [p.decide(a, True) for a in (1, 2, 3, 4)] == [
        Action.RETRY,
        Action.RETRY,
        Action.DEAD_LETTER,
        Action.DEAD_LETTER,
    ]
    assert p.decide(1, False) is Action.DEAD_LETTER
    assert policy(max_attempts=1).decide(1, True) is Action.DEAD_LETTER


def test_policy_from_settings_takes_the_options_and_the_queue_attempts() -> None:
    settings = WorkerSettings(
        retry_on_exit=False,
        retry_on_exception=True,
        retry_on_timeout=True,
        backoff_base=0.5,
        backoff_cap=4.0,
        max_attempts=9,  # applies when a queue is created; the queue's own count decides
    )
    assert RetryPolicy.from_settings(settings, 5) == policy(
        max_attempts=5,
        retry_on_exit=False,
        retry_on_exception=True,
        retry_on_timeout=True,
        backoff_base=0.5,
        backoff_cap=4.0,
    )


def test_policy_delay_is_the_backoff_of_its_base_and_cap() -> None:
    p = policy(backoff_base=2.0, backoff_cap=60.0)
    for attempt in range(1, 10):
        assert p.delay(attempt, random.Random(attempt)) == backoff_delay(
            attempt, 2.0, 60.0, random.Random(attempt)
        )


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        exponential = min(60.0, 2.0 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, base=2.0, cap=60.0, rng=rng) for _ in range(200)]
        assert all(exponential / 2 <= s <= exponential for s in samples), attempt
        assert len(set(samples)) > 150  # jitter: failing workers do not retry in lockstep
    assert backoff_delay(1, base=1.0, rng=random.Random(0)) >= 0.5  # never a hot loop
    assert backoff_delay(100, base=1.0, cap=300.0, rng=random.Random(0)) <= 300.0
    means = [sum(backoff_delay(a, rng=rng) for _ in range(300)) / 300 for a in (1, 2, 3, 4)]
    assert means == sorted(means) and means[3] > 6 * means[0]


# -- the owner, on a real queue and a real events file -----------------------------------------


class Run:
    """A queue, an events file and the attempt owner that settles into them."""

    def __init__(self, tmp_path: Path, max_attempts: int, sink: EventSink | None = None) -> None:
        self.queue = SQLiteQueue(tmp_path / "q.db", max_attempts=max_attempts)
        self.events_path = tmp_path / "events.jsonl"
        self.sink = sink or FileEventSink(self.events_path)
        self.counts = RunCounts()

    def owner(self, **policy_changes: object) -> Attempts:
        changes: dict[str, object] = {"max_attempts": self.queue.max_attempts}
        changes.update(policy_changes)
        return Attempts(
            self.queue,
            self.sink,
            policy(**changes),
            self.counts,
            hostname=HOST,
            rng=random.Random(0),
        )

    def lease(self, *ids: str) -> list[Message]:
        self.queue.send([Task(task_id, {"n": i}) for i, task_id in enumerate(ids)])
        return list(self.queue.receive(len(ids), LONG))

    def events(self) -> list[tuple[str, str]]:
        return [(e["event_type"], e["task_id"]) for e in read_events(self.events_path)]

    def close(self) -> None:
        self.sink.close()
        self.queue.close()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path, max_attempts=3)
    yield r
    r.close()


def returned(retry: bool = False, result: object = None) -> dict[str, object]:
    return {"n": 0, "retry": retry, "result": result, "elapsed": 0.25}


def raised(exception: str = "ValueError: bad input") -> dict[str, object]:
    return {"n": 0, "exception": exception, "stack_trace": "Traceback ...", "elapsed": 0.5}


def test_a_returned_task_is_recorded_then_acked(run: Run) -> None:
    attempts = run.owner()
    (message,) = run.lease("a")
    attempts.returned(message, 3, 4242, returned(result={"sum": 7}))
    assert attempts.pending == 1
    assert run.events() == []  # buffered until the batch is settled
    assert run.queue.stats().leased == 1
    attempts.settle()
    (event,) = read_events(run.events_path)
    assert list(event) == [f for f in FIELDS if f in event]  # the schema's field order
    assert event == {
        "timestamp": event["timestamp"],
        "hostname": HOST,
        "event_type": "task_completed",
        "task_id": "a",
        "attempt": 1,
        "worker_id": 3,
        "pid": 4242,
        "elapsed_time": 0.25,
        "retry": False,
        "result": {"sum": 7},
    }
    assert run.queue.stats().completed == 1
    assert (run.counts.completed, run.counts.finished, attempts.pending) == (1, 1, 0)
    assert run.counts.by_event == {EventType.TASK_COMPLETED: 1}


def test_a_task_that_asks_is_retried_after_a_backoff(run: Run) -> None:
    attempts = run.owner()
    (message,) = run.lease("r")
    attempts.returned(message, 0, 1, returned(retry=True, result="again"))
    attempts.settle()
    assert run.events() == [("task_completed", "r")]
    stats = run.queue.stats()
    assert (stats.delayed, stats.leased, stats.dead) == (1, 0, 0)  # waits out its backoff
    assert (run.counts.retried, run.counts.failed_attempts, run.counts.finished) == (1, 0, 0)


def test_a_task_that_asks_on_its_last_attempt_is_dead_lettered(tmp_path: Path) -> None:
    run = Run(tmp_path, max_attempts=1)
    attempts = run.owner()
    (message,) = run.lease("r")
    attempts.returned(message, 0, 1, returned(retry=True))
    attempts.settle()
    assert run.events() == [("task_completed", "r"), ("task_dead_lettered", "r")]
    assert read_events(run.events_path)[1]["exception"] == RETRY_ASKED
    assert {d.task.id: d.error for d in run.queue.dead_letters()} == {"r": RETRY_ASKED}
    assert (run.counts.dead_lettered, run.counts.retried) == (1, 0)
    run.close()


def test_an_exception_is_dead_lettered_unless_retry_on_exception(run: Run) -> None:
    attempts = run.owner()
    (message,) = run.lease("x")
    attempts.raised(message, 1, 2, raised())
    attempts.settle()
    failure, dead = read_events(run.events_path)
    assert failure["event_type"] == "task_exception"
    assert (failure["exception"], failure["stack_trace"]) == (
        "ValueError: bad input",
        "Traceback ...",
    )
    assert (dead["event_type"], dead["task_id"], dead["attempt"]) == ("task_dead_lettered", "x", 1)
    assert dead["exception"] == "ValueError: bad input"
    assert "worker_id" not in dead and "pid" not in dead
    assert run.queue.stats().dead == 1
    assert (run.counts.failed_attempts, run.counts.dead_lettered) == (1, 1)


def test_an_exception_is_retried_with_retry_on_exception(run: Run) -> None:
    attempts = run.owner(retry_on_exception=True)
    (message,) = run.lease("x")
    attempts.raised(message, 1, 2, raised())
    attempts.settle()
    assert run.events() == [("task_exception", "x")]
    assert run.queue.stats().delayed == 1
    assert (run.counts.failed_attempts, run.counts.retried) == (1, 1)


def test_an_exit_is_retried_and_a_timeout_dead_lettered_by_default(run: Run) -> None:
    attempts = run.owner()
    crashed, slow = run.lease("crashed", "slow")
    attempts.exited(crashed, 0, 11, -9, 1.5)
    attempts.timed_out(slow, 1, 12, 2.5, 2.0)
    attempts.settle()
    exited, timed_out, dead = read_events(run.events_path)
    assert (exited["event_type"], exited["exit_code"], exited["elapsed_time"]) == (
        "task_exited",
        -9,
        1.5,
    )
    assert (timed_out["event_type"], timed_out["elapsed_time"]) == ("task_timed_out", 2.5)
    assert (dead["event_type"], dead["task_id"]) == ("task_dead_lettered", "slow")
    assert dead["exception"] == "the task ran longer than --max-runtime 2 s and was killed"
    stats = run.queue.stats()
    assert (stats.delayed, stats.dead) == (1, 1)
    assert (run.counts.failed_attempts, run.counts.retried, run.counts.dead_lettered) == (2, 1, 1)


def test_an_exit_on_the_last_attempt_keeps_its_cause(tmp_path: Path) -> None:
    run = Run(tmp_path, max_attempts=1)
    attempts = run.owner()
    killed, exited = run.lease("killed", "exited")
    attempts.exited(killed, 0, 11, -9, 0.1)
    attempts.exited(exited, 1, 12, 3, 0.1)
    attempts.settle()
    assert {d.task.id: d.error for d in run.queue.dead_letters()} == {
        "killed": "the task's process was killed by signal 9",
        "exited": "the task's process exited with code 3 before returning",
    }
    run.close()


def test_dead_letters_that_receive_reports_are_written_and_counted(tmp_path: Path) -> None:
    run = Run(tmp_path, max_attempts=1)
    attempts = run.owner()
    run.queue.send([Task("a", {}), Task("b", {})])
    # leased on their only attempt by a worker that then died: a lease of 0 s has expired
    assert len(run.queue.receive(2, 0)) == 2
    received = run.queue.receive(5, LONG)  # the next worker's receive
    assert not received and {d.task.id for d in received.dead_lettered} == {"a", "b"}
    attempts.dead_lettered_by_queue(received.dead_lettered)
    events = read_events(run.events_path)  # written at once, not with the next batch
    assert [(e["event_type"], e["task_id"], e["attempt"]) for e in events] == [
        ("task_dead_lettered", "a", 1),
        ("task_dead_lettered", "b", 1),
    ]
    assert all(e["exception"].startswith("lease expired on attempt 1 of 1") for e in events)
    assert (run.counts.dead_lettered, run.counts.failed_attempts, run.counts.finished) == (2, 0, 2)
    assert attempts.pending == 0
    run.close()


def test_a_retry_the_queue_refuses_is_a_dead_letter_with_its_event(tmp_path: Path) -> None:
    # The queue allows one attempt, the runtime believes in three: the queue dead-letters the
    # task on `retry` and says so, and the owner records and counts it.
    run = Run(tmp_path, max_attempts=1)
    attempts = run.owner(max_attempts=3, retry_on_exception=True)
    (message,) = run.lease("x")
    attempts.raised(message, 0, 1, raised("OSError: disk on fire"))
    attempts.settle()
    failure, dead = read_events(run.events_path)
    assert (failure["event_type"], dead["event_type"]) == ("task_exception", "task_dead_lettered")
    assert (dead["task_id"], dead["attempt"], dead["exception"]) == (
        "x",
        1,
        "OSError: disk on fire",
    )
    assert {d.task.id: d.error for d in run.queue.dead_letters()} == {"x": "OSError: disk on fire"}
    assert (run.counts.retried, run.counts.dead_lettered, run.counts.failed_attempts) == (0, 1, 1)
    run.close()


def test_nothing_is_acked_when_the_events_cannot_be_written(tmp_path: Path) -> None:
    run = Run(tmp_path, max_attempts=3, sink=FileEventSink("/dev/full"))  # every write fails
    attempts = run.owner()
    (message,) = run.lease("a")
    attempts.returned(message, 0, 1, returned())
    with pytest.raises(OSError):
        attempts.settle()
    stats = run.queue.stats()
    assert (stats.leased, stats.completed) == (1, 0)  # its lease will expire: it runs again
    assert run.counts.completed == 0
    run.queue.close()


def test_a_batch_is_settled_when_it_is_old_or_large_enough(run: Run) -> None:
    attempts = run.owner()
    first, *rest = run.lease(*(f"t{i:04d}" for i in range(SETTLE_MAX + 1)))
    attempts.returned(first, 0, 1, returned())
    start = attempts.last_settled
    assert attempts.seconds_until_due(start) == SETTLE_INTERVAL
    attempts.settle_if_due(start)
    assert attempts.pending == 1 and run.queue.stats().completed == 0
    attempts.settle_if_due(start + 2 * SETTLE_INTERVAL)
    assert attempts.pending == 0 and run.queue.stats().completed == 1
    assert attempts.seconds_until_due(start) is None
    for message in rest[:-1]:
        attempts.returned(message, 0, 1, returned())
    attempts.settle_if_due(attempts.last_settled)
    assert attempts.pending == SETTLE_MAX - 1  # young and not yet large: it waits
    attempts.returned(rest[-1], 0, 1, returned())
    attempts.settle_if_due(attempts.last_settled)
    assert attempts.pending == 0 and run.queue.stats().completed == SETTLE_MAX + 1


def test_fields_that_do_not_apply_are_left_out_of_the_events(run: Run) -> None:
    attempts = run.owner()
    returned_none, crashed = run.lease("none", "crashed")
    attempts.returned(returned_none, 0, 1, returned(result=None))
    attempts.raised(crashed, 1, 2, {"n": 1, "exception": "E", "stack_trace": "", "elapsed": 0.1})
    attempts.settle()
    completed, failure, _dead = read_events(run.events_path)
    assert "result" not in completed and completed["retry"] is False
    assert "stack_trace" not in failure and failure["exception"] == "E"
    assert all(list(e) == [f for f in FIELDS if f in e] for e in (completed, failure))
