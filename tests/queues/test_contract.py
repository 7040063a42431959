"""The queue contract: every clause of the protocol, run against every backend.

Each test is one clause, parametrized (by the `backend` fixture in conftest.py) over memory,
sqlite, redis, sqs, sqs-fifo and pubsub, the last four on real servers (pubsub on Google's own
emulator). A backend that cannot honour a
clause is listed in EXCLUDED below, by clause name, with the reason: that table is the one place
where the backends' differences are written down, and the docs point to it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from taskfleet.errors import TaskfleetError
from taskfleet.queues import (
    DeadLetter,
    Message,
    Queue,
    SendInterrupted,
    event_queue_url,
    open_queue,
)
from taskfleet.tasks import Task
from taskfleet.tasks.batches import TaskBatch

if TYPE_CHECKING:
    from conftest import Backend

SQS = ("sqs", "sqs-fifo")
PUBSUB = ("pubsub", "pubsub-exactly-once")

EXCLUDED: dict[str, dict[str, str]] = {
    "send_counts_inserted": {
        kind: "the Pub/Sub API counts no messages: stats show only the dead letters"
        for kind in PUBSUB
    },
    "send_counts_ids_already_present": {
        "sqs": "SQS cannot tell a duplicate from a new message: already_present is always 0",
        "sqs-fifo": "FIFO deduplication is silent: SQS reports a dropped duplicate as sent",
        **{
            kind: "a Pub/Sub topic has no deduplication: already_present is always 0"
            for kind in PUBSUB
        },
    },
    "send_is_idempotent": {
        "sqs": "a standard queue has no deduplication: loading twice enqueues twice "
        "(use a FIFO queue, which dedupes by task id for 5 minutes)",
        **{
            kind: "a Pub/Sub topic has no deduplication: loading twice publishes twice"
            for kind in PUBSUB
        },
    },
    "release_does_not_count_the_attempt": {
        kind: "SQS counts every receive; a release is a visibility timeout of 0" for kind in SQS
    },
    "stale_receipt_changes_nothing": {
        **{
            kind: "SQS accepts an earlier receipt handle of a message, so a stale retry, "
            "release or extend changes the current delivery"
            for kind in SQS
        },
        **{
            kind: "Pub/Sub honours an earlier ack id of a message: a stale retry or release "
            "settles the current delivery, a stale extend changes its deadline"
            for kind in PUBSUB
        },
    },
    "ack_after_the_lease_passed_on_completes_the_task": {
        **{
            kind: "AWS documents that deleting with an earlier receipt handle may not delete "
            "the message (moto deletes it; AWS does not promise to)"
            for kind in SQS
        },
        **{
            kind: "the stale ack does settle the task, but Pub/Sub keeps no total of completed "
            "tasks for stats to show"
            for kind in PUBSUB
        },
    },
    "stats_count_visible_leased_and_dead": {
        kind: "the Pub/Sub API counts no messages: visible and leased are unknown (None); only "
        "the dead letters are counted, by reading the dead-letter subscription"
        for kind in PUBSUB
    },
    "stats_count_each_state_exactly": {
        **{
            kind: "SQS counts are approximate; a delayed retry is an in-flight message "
            "(counted as leased); SQS keeps no totals of inserted or completed tasks"
            for kind in SQS
        },
        **{kind: "the Pub/Sub API counts no messages and keeps no totals" for kind in PUBSUB},
    },
    "load_with_updates_gives_present_tasks_the_new_data": {
        kind: "SQS cannot read or change the messages it holds (only its dead letters, by "
        "receiving them): a load with updates replaces the dead letters and sends nothing else"
        for kind in SQS
    }
    | {
        kind: "Pub/Sub cannot read or change the messages it holds (only its dead letters, by "
        "pulling them): a load with updates replaces the dead letters and sends nothing else"
        for kind in PUBSUB
    },
    "load_with_updates_leaves_a_running_attempt_its_data": {
        kind: "an SQS message in flight cannot be changed: it keeps its data" for kind in SQS
    }
    | {kind: "a Pub/Sub message cannot be changed: it keeps its data" for kind in PUBSUB},
    "purge_forgets_the_ids": {
        "sqs-fifo": "FIFO deduplication ids outlive a purge for 5 minutes",
    },
}


@pytest.fixture(autouse=True)
def _exclusions(request: pytest.FixtureRequest) -> None:
    clause = request.node.originalname.removeprefix("test_")
    kind = request.node.callspec.params["backend"]
    reason = EXCLUDED.get(clause, {}).get(kind)
    if reason:
        pytest.skip(f"excluded for {kind}: {reason}")


MakeQueue = Callable[..., Queue]


def tasks(n: int, prefix: str = "t") -> list[Task]:
    return [Task(f"{prefix}{i:05d}", {"i": i}) for i in range(n)]


def drain(queue: Queue, lease: float, limit: int = 10_000) -> list[Message]:
    """Receive until the queue returns nothing (acking nothing)."""
    got: list[Message] = []
    while len(got) < limit:
        batch = queue.receive(10, lease)
        if not batch:
            return got
        got.extend(batch)
    return got


def receive_one(queue: Queue, lease: float, wait: float = 0) -> Message:
    (message,) = queue.receive(1, lease, wait_seconds=wait)
    return message


def counted(queue: Queue, number: int) -> int | None:
    """What `stats` says for `number` tasks waiting or leased: None (unknown) on a queue that
    does not declare `counts_tasks`."""
    return number if queue.counts_tasks else None


# -- send ---------------------------------------------------------------------------------


def test_send_then_receive_round_trips_json(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    data = {"text": "héllo ✓ 𝄞", "n": [1, 2.5, -3], "ok": True, "none": None, "deep": {"a": {}}}
    q.send([Task("only", data)])
    m = receive_one(q, backend.lease)
    assert m.task == Task("only", data)
    assert m.attempt == 1
    assert m.task_id == "only"


def test_send_takes_plain_dicts_and_names_a_bad_one(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """A plain dict `{"id", "data"}` works wherever a task does; one that is not a task is
    refused with a line that says why (and, where sends are not atomic, what went in)."""
    q = make_queue()
    q.send([{"id": "plain", "data": {"n": 1}}, Task("typed", {"n": 2})])
    got: dict[str, object] = {}
    for _ in range(10):
        got.update((m.task_id, m.task.data) for m in q.receive(10, backend.lease, wait_seconds=2))
        if len(got) == 2:
            break
    assert got == {"plain": {"n": 1}, "typed": {"n": 2}}
    with pytest.raises(TaskfleetError, match="task 2 of those sent: the entry has no 'id'"):
        q.send([{"id": "fine", "data": {}}, {"data": {}}])


def test_send_counts_inserted(make_queue: MakeQueue) -> None:
    q = make_queue()
    result = q.send(iter(tasks(25)))
    assert (result.inserted, result.ids_seen) == (25, 25)
    stats = q.stats()
    assert stats.visible == 25
    assert stats.inserted in (25, None)


def test_send_counts_ids_already_present(make_queue: MakeQueue, backend: Backend) -> None:
    """An id queued, leased, done or dead is skipped, whatever its state."""
    q = make_queue()
    q.send(tasks(4))
    leased, done, dead = q.receive(3, 30)
    q.ack([done])
    q.dead_letter(dead, "bad")
    result = q.send(tasks(6))
    assert (result.inserted, result.already_present, result.ids_seen) == (2, 4, 6)
    assert q.stats().duplicates_skipped == 4
    q.ack([leased])


def test_send_is_idempotent(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(5))
    q.send(tasks(5))
    ids = [m.task_id for m in drain(q, 30)]
    assert sorted(ids) == [t.id for t in tasks(5)]


def test_send_streams_a_large_iterable(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    n = 600  # more than one script call (redis: 500), many SQS batches in flight
    result = q.send(Task(f"big{i}", {"i": i}) for i in range(n))
    assert result.inserted == n
    received = drain(q, 30, limit=n + 10)
    assert sorted(m.task.data["i"] for m in received) == list(range(n))
    q.ack(received)
    assert q.receive(10, 30) == []


def test_send_interrupted_says_what_went_in(make_queue: MakeQueue, backend: Backend) -> None:
    """A task source that fails part way (a bad entry in a task file): a transactional backend
    inserts nothing and raises the error itself; the others raise SendInterrupted with exactly
    the number of tasks that are in the queue."""
    q = make_queue()

    def source() -> Iterator[Task]:
        yield from tasks(300)
        raise TaskfleetError("line 301: the entry has no 'id'")

    with pytest.raises(TaskfleetError, match="line 301") as info:
        q.send(source())
    if q.atomic_send:
        assert not isinstance(info.value, SendInterrupted)
        inserted = 0
    else:
        assert isinstance(info.value, SendInterrupted)
        assert isinstance(info.value.cause, TaskfleetError)
        inserted = info.value.inserted
    assert len(drain(q, 30, limit=400)) == inserted


# -- receive ------------------------------------------------------------------------------


def test_receive_respects_max_messages(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(20))
    assert len(q.receive(3, 30)) == 3
    assert q.receive(0, 30) == []
    assert len(q.receive(15, 30)) == 15


def test_receive_leases_each_task_to_one_consumer(make_queue: MakeQueue, backend: Backend) -> None:
    name = f"shared{uuid.uuid4().hex[:8]}"
    first, second = make_queue(name=name), make_queue(name=name)
    first.send(tasks(60))
    got: dict[int, list[str]] = {0: [], 1: []}

    def consume(index: int, queue: Queue) -> None:
        while batch := queue.receive(7, 30):
            got[index].extend(m.task_id for m in batch)

    threads = [threading.Thread(target=consume, args=(i, q)) for i, q in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == [t.id for t in tasks(60)]


def test_receive_on_an_empty_queue_waits_then_returns_nothing(
    make_queue: MakeQueue, backend: Backend
) -> None:
    q = make_queue()
    start = time.monotonic()
    assert q.receive(5, backend.lease) == []
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    assert q.receive(5, backend.lease, wait_seconds=1) == []
    assert 0.9 <= time.monotonic() - start < 3


def test_receive_wait_returns_when_a_task_arrives(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    timer = threading.Timer(0.3, lambda: q.send(tasks(1)))
    timer.start()
    start = time.monotonic()
    got = q.receive(5, backend.lease, wait_seconds=8)
    timer.join()
    assert [m.task_id for m in got] == ["t00000"]
    assert time.monotonic() - start < 4


# -- ack, leases --------------------------------------------------------------------------


def test_ack_completes_the_tasks(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(3))
    q.ack(q.receive(3, backend.lease))
    q.ack([])
    time.sleep(backend.past_lease())
    assert q.receive(3, backend.lease) == []
    stats = q.stats()
    assert (stats.visible, stats.leased, stats.dead) == (counted(q, 0), counted(q, 0), 0)
    assert stats.completed in (3, None)


def test_expired_lease_redelivers_with_the_next_attempt(
    make_queue: MakeQueue, backend: Backend
) -> None:
    q = make_queue()
    q.send(tasks(1))
    assert receive_one(q, backend.lease).attempt == 1
    assert q.receive(1, backend.lease) == []
    time.sleep(backend.past_lease())
    assert receive_one(q, backend.lease).attempt == 2


def test_expired_lease_with_spent_attempts_is_dead_lettered(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """A worker that died on the last attempt: the task goes to the dead letters, not back."""
    q = make_queue(max_attempts=2)
    q.send(tasks(1))
    for attempt in (1, 2):
        assert receive_one(q, backend.lease).attempt == attempt
        time.sleep(backend.past_lease())
    assert q.receive(1, backend.lease) == []
    (letter,) = list(q.dead_letters())
    assert letter.task.id == "t00000"
    assert letter.attempts == 2
    assert "lease expired" in (letter.error or "")
    assert q.stats().dead == 1


def test_expired_lease_on_the_last_attempt_is_reported_once(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """The receive that dead-letters a task whose last lease expired reports it (so that the
    runtime writes its event), and no later receive reports it again."""
    q = make_queue(max_attempts=1)
    q.send(tasks(3))
    assert len(q.receive(2, backend.lease)) == 2
    time.sleep(backend.past_lease())
    found = q.receive(10, backend.lease)
    assert [m.task_id for m in found] == ["t00002"]
    reported = sorted(found.dead_lettered, key=lambda letter: letter.task.id)
    assert [(d.task, d.attempts) for d in reported] == [(t, 1) for t in tasks(2)]
    assert all("lease expired" in (d.error or "") for d in reported)
    q.ack(found)
    time.sleep(backend.past_lease())
    again = q.receive(10, backend.lease)
    assert (list(again), again.dead_lettered) == ([], [])
    assert sorted(d.task.id for d in q.dead_letters()) == ["t00000", "t00001"]
    assert q.stats().dead == 2


def test_extend_renews_the_lease(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(1))
    m = receive_one(q, backend.lease)
    q.extend([m], backend.lease * 4)
    q.extend([], backend.lease)
    time.sleep(backend.past_lease())
    assert q.receive(1, backend.lease) == []
    q.ack([m])
    assert q.stats().leased == counted(q, 0)


def test_release_makes_the_task_visible_at_once(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(2))
    got = q.receive(2, 30)
    q.release(got)
    q.release([])
    again = q.receive(2, 30)
    assert sorted(m.task_id for m in again) == ["t00000", "t00001"]


def test_release_does_not_count_the_attempt(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(1))
    q.release([receive_one(q, 30)])
    assert receive_one(q, 30).attempt == 1


def test_batches_larger_than_a_backend_batch(make_queue: MakeQueue, backend: Backend) -> None:
    """25 messages: more than one SQS batch of 10 in every call."""
    q = make_queue()
    q.send(tasks(25))
    got = q.receive(25, 30)
    assert len(got) == 25
    q.extend(got, 60)
    q.release(got)
    got = q.receive(25, 30)
    assert len(got) == 25
    q.ack(got)
    assert q.receive(25, 30) == []


# -- retry, dead letters ------------------------------------------------------------------


def test_retry_makes_the_task_visible_again(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(1))
    assert q.retry(receive_one(q, 30), 0, "flaky") is True
    assert receive_one(q, 30).attempt == 2


def test_retry_delay_hides_the_task_until_due(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(1))
    assert q.retry(receive_one(q, 30), 1.0) is True
    assert q.receive(1, 30) == []
    time.sleep(1.3)
    assert receive_one(q, 30).attempt == 2


def test_retry_dead_letters_when_attempts_are_spent(
    make_queue: MakeQueue, backend: Backend
) -> None:
    q = make_queue(max_attempts=2)
    q.send(tasks(1))
    assert q.retry(receive_one(q, 30), 0, "first") is True
    m = receive_one(q, 30)
    assert m.attempt == 2
    assert q.retry(m, 0, "second") is False
    assert q.receive(1, 30) == []
    assert list(q.dead_letters()) == [DeadLetter(Task("t00000", {"i": 0}), 2, "second")]
    assert q.stats().dead == 1


def test_dead_letter_moves_the_task_now(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(2))
    first, second = q.receive(2, backend.lease)
    q.dead_letter(first, "bad input")
    q.ack([second])
    time.sleep(backend.past_lease())
    assert q.receive(2, backend.lease) == []
    assert list(q.dead_letters()) == [DeadLetter(first.task, 1, "bad input")]


def test_redrive_all_puts_dead_letters_back_with_fresh_attempts(
    make_queue: MakeQueue, backend: Backend
) -> None:
    q = make_queue(max_attempts=1)
    q.send(tasks(3))
    for m in q.receive(3, 30):
        assert q.retry(m, 0, "boom") is False
    assert q.stats().dead == 3
    assert q.redrive() == 3
    assert list(q.dead_letters()) == []
    again = q.receive(3, 30)
    assert sorted(m.task_id for m in again) == [t.id for t in tasks(3)]
    assert {m.attempt for m in again} == {1}
    assert q.stats().dead == 0


def test_redrive_given_ids_moves_only_those(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(3))
    for m in q.receive(3, 30):
        q.dead_letter(m, "no")
    assert q.redrive(["t00001", "unknown"]) == 1
    assert receive_one(q, 30).task_id == "t00001"
    assert sorted(d.task.id for d in q.dead_letters()) == ["t00000", "t00002"]
    assert q.redrive([]) == 0


# -- a load with updates (`load-queue --update`) -------------------------------------------


def batches_of(items: list[Task]) -> list[TaskBatch]:
    """`items` as one validated batch, as `load-queue` reads them from a file."""
    bodies = [task.to_json().decode() for task in items]
    ids = [task.id for task in items]
    return [TaskBatch("tasks.json", "task", range(1, len(items) + 1), ids, bodies, True)]


def test_load_with_updates_gives_present_tasks_the_new_data(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """Waiting, delayed and dead tasks take the file's data; completed ones are left alone
    (counted as changed where the queue keeps their data, else as not compared); new ids are
    inserted; an unchanged task counts as nothing."""
    q = make_queue()
    q.send([Task(i, {"v": 1}) for i in ("waiting", "delayed", "dead", "done", "same")])
    by_id = {m.task_id: m for m in q.receive(5, 30)}
    q.release([by_id["waiting"], by_id["same"]])
    q.retry(by_id["delayed"], 0.5, "later")
    q.dead_letter(by_id["dead"], "broken")
    q.ack([by_id["done"]])
    fixed = [Task(i, {"v": 2}) for i in ("waiting", "delayed", "dead", "done", "new")]
    result = q.send_updates(batches_of([*fixed, Task("same", {"v": 1})]))
    assert (result.inserted, result.already_present) == (1, 5)
    changes = result.changes
    assert (changes.updated, changes.dead_updated, changes.rerun) == (2, 1, 0)
    assert changes.completed_changed + changes.completed_unknown == 1
    assert [(d.task.id, d.task.data, d.error) for d in q.dead_letters()] == [
        ("dead", {"v": 2}, "broken")
    ]
    assert q.redrive() == 1
    time.sleep(0.6)
    got = {m.task_id: m.task.data for m in drain(q, 30)}
    assert got == {
        "waiting": {"v": 2},
        "delayed": {"v": 2},
        "dead": {"v": 2},
        "new": {"v": 2},
        "same": {"v": 1},
    }


def test_load_with_updates_leaves_a_running_attempt_its_data(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """A leased task's running attempt keeps the data it was given; its next attempt (after a
    retry or an expired lease) gets the new data."""
    q = make_queue()
    q.send([Task("t", {"v": 1})])
    running = receive_one(q, 30)
    result = q.send_updates(batches_of([Task("t", {"v": 2})]))
    assert result.changes.updated == 1
    assert running.task.data == {"v": 1}
    assert q.retry(running, 0, "try again") is True
    again = receive_one(q, 30, wait=backend.lease)
    assert (again.task.data, again.attempt) == ({"v": 2}, 2)


def test_load_with_updates_replaces_dead_letters(make_queue: MakeQueue, backend: Backend) -> None:
    """The redrive after a fix: every backend gives its dead letters the file's data (SQS and
    Pub/Sub by sending the fixed copy to the dead letters and deleting the broken one), so that
    `redrive` runs the fixed data; a dead letter whose data is unchanged stays as it was."""
    q = make_queue()
    q.send([Task("a", {"broken": True}), Task("b", {"v": 1})])
    for m in q.receive(2, 30):
        q.dead_letter(m, f"bad {m.task_id}")
    result = q.send_updates(batches_of([Task("a", {"fixed": True}), Task("b", {"v": 1})]))
    assert result.changes.dead_updated == 1
    letters = sorted((d.task.id, d.task.data, d.error) for d in q.dead_letters())
    assert letters == [("a", {"fixed": True}, "bad a"), ("b", {"v": 1}, "bad b")]
    assert q.redrive(["a"]) == 1
    message = receive_one(q, 30, wait=backend.lease)
    assert (message.task_id, message.task.data, message.attempt) == ("a", {"fixed": True}, 1)


# -- stats, queue lifecycle ----------------------------------------------------------------


def test_stats_count_visible_leased_and_dead(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(6))
    leased = q.receive(3, 30)
    q.dead_letter(leased[0], "x")
    stats = q.stats()
    assert (stats.visible, stats.leased, stats.dead) == (3, 2, 1)
    assert stats.remaining == 5
    assert stats.approximate is backend.name.startswith("sqs")


def test_stats_say_unknown_for_what_the_backend_cannot_count(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """Never a made-up 0: a backend that does not declare `counts_tasks` says None (unknown)
    for the tasks waiting and leased, and so for `remaining`; one that declares it counts."""
    q = make_queue()
    q.send(tasks(3))
    q.receive(1, 30)
    stats = q.stats()
    if q.counts_tasks:
        assert (stats.visible, stats.leased, stats.delayed, stats.remaining) == (2, 1, 0, 3)
    else:
        assert (stats.visible, stats.leased, stats.delayed, stats.remaining) == (None,) * 4
        assert stats.approximate and stats.as_dict()["remaining"] is None
    assert stats.dead == 0


def test_stats_count_each_state_exactly(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(8))
    q.send(tasks(2))
    a, b, c, d = q.receive(4, 30)
    q.ack([a])
    q.retry(b, 60)
    q.dead_letter(c, "x")
    stats = q.stats()
    assert stats.as_dict() == {
        "visible": 4,
        "leased": 1,
        "delayed": 1,
        "dead": 1,
        "inserted": 8,
        "completed": 1,
        "duplicates_skipped": 2,
        "remaining": 6,
        "approximate": False,
        # counted only by a queue that keeps dependencies (none of these tasks waits)
        "waiting": 0 if q.tracks_dependencies else None,
        "blocked": 0 if q.tracks_dependencies else None,
    }
    q.ack([d])


def test_max_attempts_is_kept_by_an_existing_queue(make_queue: MakeQueue) -> None:
    name = f"keep{uuid.uuid4().hex[:8]}"
    assert make_queue(name=name, max_attempts=2).max_attempts == 2
    assert make_queue(name=name, max_attempts=5).max_attempts == 2
    assert make_queue(name=name).max_attempts == 2
    assert make_queue().max_attempts == 3


def test_purge_deletes_everything(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(5))
    first, second = q.receive(2, 30)
    q.dead_letter(first, "x")
    q.retry(second, 60)
    q.purge()
    stats = q.stats()
    unknown_or_0 = counted(q, 0)
    assert (stats.visible, stats.leased, stats.delayed, stats.dead) == (
        unknown_or_0,
        unknown_or_0,
        unknown_or_0,
        0,
    )
    assert stats.inserted in (0, None)
    assert q.receive(5, 30) == []
    assert list(q.dead_letters()) == []


def test_purge_forgets_the_ids(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    q.send(tasks(2))
    q.ack(q.receive(1, 30))
    q.purge()
    assert q.send(tasks(2)).inserted == 2
    assert len(drain(q, 30)) == 2


def test_event_queue_is_a_normal_queue(make_queue: MakeQueue, backend: Backend) -> None:
    q = make_queue()
    url = event_queue_url(q.url)
    assert "-events" in url
    events = open_queue(url)
    try:
        event = {"event_type": "task_completed", "task_id": "t1", "hostname": "h"}
        event_id = str(uuid.uuid4())
        events.send([Task(event_id, event)])
        (m,) = events.receive(10, 30)
        assert (m.task.id, m.task.data) == (event_id, event)
        events.ack([m])
        assert q.stats().visible == counted(q, 0)  # the task queue is another queue
    finally:
        events.purge()
        events.close()


# -- deliveries that lost their lease -----------------------------------------------------


def _pass_the_lease_on(q: Queue, backend: Backend) -> tuple[Message, Message]:
    q.send(tasks(1))
    stale = receive_one(q, backend.lease)
    time.sleep(backend.past_lease())
    current = receive_one(q, 30)
    assert current.attempt == 2
    return stale, current


def test_ack_after_the_lease_passed_on_completes_the_task(
    make_queue: MakeQueue, backend: Backend
) -> None:
    """The slow worker finished after all: the work is done, whoever holds the lease now."""
    q = make_queue()
    stale, current = _pass_the_lease_on(q, backend)
    q.ack([stale])
    q.ack([current])
    stats = q.stats()
    assert (stats.visible, stats.leased, stats.completed) == (0, 0, 1)


def test_stale_receipt_changes_nothing(make_queue: MakeQueue, backend: Backend) -> None:
    """A delivery whose lease passed on cannot retry, release, extend or dead-letter the task
    out from under its new holder."""
    q = make_queue()
    stale, current = _pass_the_lease_on(q, backend)
    assert q.retry(stale, 0, "late") is True
    q.release([stale])
    q.extend([stale], 0.01)
    q.dead_letter(stale, "late")
    time.sleep(0.05)
    assert q.receive(1, 30) == []
    assert list(q.dead_letters()) == []
    assert q.stats().leased == 1
    q.ack([current])
