"""The embedded SQLite queue: every clause of the protocol, on real files, with short leases.

Tests that wait for a lease or a delay to pass use 0.1-0.3 s; tests that need a lease to stay
live use a long one, so that a slow, shared machine cannot make them flaky.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfleet.errors import MissingExtraError, QueueURLError, TaskFileError, TaskfleetError
from taskfleet.queues import (
    DEFAULT_MAX_ATTEMPTS,
    SendInterrupted,
    backend_class,
    event_queue_url,
    open_queue,
)
from taskfleet.queues.sqlite import SQLiteQueue, parse_sqlite_url
from taskfleet.tasks import Task, iter_tasks

LONG = 3600.0  # a lease that stays live for the whole test


def tasks(n: int, start: int = 0) -> list[Task]:
    return [Task(f"t{i:05d}", {"i": i}) for i in range(start, start + n)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def queue(db: Path) -> Iterator[SQLiteQueue]:
    q = SQLiteQueue(db)
    try:
        yield q
    finally:
        q.close()


def make_queue(db: Path, **kwargs: object) -> SQLiteQueue:
    return SQLiteQueue(db, **kwargs)  # type: ignore[arg-type]


# -- storage ----------------------------------------------------------------------------------


def test_file_is_in_wal_mode(queue: SQLiteQueue, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sync_option_sets_how_the_file_waits_for_the_disk(db: Path) -> None:
    """`sync=off` (a scratch queue) never waits for the disk; the default waits as WAL's
    NORMAL does; any other value is refused with one line naming both."""

    def synchronous(url: str) -> int:
        with open_queue(url) as queue:
            assert isinstance(queue, SQLiteQueue)
            return int(queue._conn.execute("PRAGMA synchronous").fetchone()[0])

    assert synchronous(f"sqlite:///{db}") == 1  # NORMAL
    assert synchronous(f"sqlite:///{db}?sync=off") == 0  # OFF
    with open_queue(f"sqlite:///{db}?sync=off") as queue:
        queue.send([Task("a", {"x": 1})])
    with open_queue(f"sqlite:///{db}") as queue:
        assert [m.task.id for m in queue.receive(5, 30)] == ["a"]
    with pytest.raises(QueueURLError, match=r"sync=normal .* or sync=off"):
        open_queue(f"sqlite:///{db}?sync=full")


def test_state_survives_reopening(db: Path) -> None:
    with make_queue(db) as q:
        q.send(tasks(3))
        q.ack(q.receive(1, LONG))
    with make_queue(db) as q:
        stats = q.stats()
        assert (stats.visible, stats.completed, stats.inserted) == (2, 1, 3)


def test_two_named_queues_in_one_file_are_independent(db: Path) -> None:
    with make_queue(db, name="a") as a, make_queue(db, name="b", max_attempts=7) as b:
        a.send(tasks(2))
        b.send(tasks(5))
        assert (a.stats().visible, b.stats().visible) == (2, 5)
        assert (a.max_attempts, b.max_attempts) == (DEFAULT_MAX_ATTEMPTS, 7)
        a.purge()
        assert (a.stats().visible, b.stats().visible) == (0, 5)


# -- send -------------------------------------------------------------------------------------


def test_send_then_receive_in_insertion_order(queue: SQLiteQueue) -> None:
    result = queue.send(tasks(4_500), batch_size=1_000)
    assert (result.inserted, result.already_present, result.ids_seen) == (4_500, 0, 4_500)
    got = []
    while messages := queue.receive(700, LONG):
        got.extend(m.task for m in messages)
    assert got == tasks(4_500)


def test_send_is_idempotent_in_every_state(db: Path) -> None:
    with make_queue(db, max_attempts=1) as q:
        q.send([Task(i, {"v": 1}) for i in ("queued", "leased", "done", "dead")])
        received = {m.task_id: m for m in q.receive(4, LONG)}
        q.release([received["queued"]])  # queued again
        q.ack([received["done"]])
        q.retry(received["dead"], error="boom")  # max_attempts=1: dead at once
        before = q.stats()  # and "leased" stays leased
        assert (before.visible, before.leased, before.completed, before.dead) == (1, 1, 1, 1)

        new_bodies = [Task(i, {"v": 2}) for i in ("queued", "leased", "done", "dead", "new")]
        result = q.send(new_bodies)
        assert (result.inserted, result.already_present) == (1, 4)
        after = q.stats()
        assert (after.inserted, after.duplicates_skipped) == (5, 4)
        assert (after.visible, after.leased, after.completed, after.dead) == (2, 1, 1, 1)
        got = sorted((m.task_id, m.task.data["v"]) for m in q.receive(5, LONG))
        assert got == [("new", 2), ("queued", 1)]  # a skipped id keeps its first body


def test_duplicate_inside_one_send_is_skipped_and_counted(queue: SQLiteQueue) -> None:
    result = queue.send([Task("a", {"n": 1}), Task("a", {"n": 2})])
    assert (result.inserted, result.already_present) == (1, 1)
    assert [m.task.data for m in queue.receive(5, LONG)] == [{"n": 1}]


def test_a_bad_task_anywhere_inserts_nothing(queue: SQLiteQueue, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    lines = [f'{{"id": "t{i}"}}\n' for i in range(5_000)] + ['{"id": "x", "data": 1}\n']
    path.write_text("".join(lines))
    with pytest.raises(TaskFileError, match="line 5001"):
        queue.send(iter_tasks(path), batch_size=1_000)
    stats = queue.stats()
    assert (stats.inserted, stats.visible, stats.duplicates_skipped) == (0, 0, 0)
    assert queue.receive(10, LONG) == []


def test_data_json_cannot_hold_is_refused_and_nothing_inserted(queue: SQLiteQueue) -> None:
    bad = [*tasks(3_000), Task("odd", {"when": {1, 2}})]
    with pytest.raises(TaskfleetError, match=r"task 'odd'.*cannot be stored as JSON"):
        queue.send(bad, batch_size=1_000)
    assert queue.stats().inserted == 0


def test_bodies_round_trip_exactly(queue: SQLiteQueue) -> None:
    data = {"f": 0.1 + 0.2, "tiny": 5e-324, "big": 2**63 - 1, "s": 'é😀\u2028"\\', "n": None}
    queue.send([Task('id-"é😀', data)])
    (message,) = queue.receive(1, LONG)
    assert message.task == Task('id-"é😀', data)


def test_send_interrupted_carries_count_and_cause() -> None:
    cause = TaskFileError("f.jsonl: line 9: the id is empty.")
    error = SendInterrupted(inserted=1200, cause=cause, already_present=3)
    assert isinstance(error, TaskfleetError)
    assert (error.inserted, error.already_present, error.cause) == (1200, 3, cause)
    assert "line 9" in str(error) and "1,200" in str(error)


# -- receive and leases -----------------------------------------------------------------------


def test_a_live_lease_hides_the_task(queue: SQLiteQueue) -> None:
    queue.send(tasks(2))
    (first,) = queue.receive(1, LONG)
    (second,) = queue.receive(5, LONG)
    assert first.task_id != second.task_id
    assert queue.receive(5, LONG) == []
    assert queue.stats().leased == 2 and queue.stats().visible == 0


def test_an_expired_lease_makes_the_task_visible_again(queue: SQLiteQueue) -> None:
    queue.send(tasks(1))
    (first,) = queue.receive(1, 0.2)
    assert queue.stats().leased == 1
    time.sleep(0.3)
    assert queue.stats().visible == 1 and queue.stats().leased == 0
    (again,) = queue.receive(1, LONG)
    assert again.task == first.task
    assert (first.attempt, again.attempt) == (1, 2)
    assert again.receipt != first.receipt


def test_a_zero_lease_never_hands_out_a_task_twice_in_one_call(queue: SQLiteQueue) -> None:
    queue.send(tasks(2))
    messages = queue.receive(10, 0)
    assert sorted(m.task_id for m in messages) == ["t00000", "t00001"]
    assert {m.attempt for m in messages} == {1}
    assert queue.stats().dead == 0


def test_receive_waits_for_a_task(queue: SQLiteQueue, db: Path) -> None:
    def send_later() -> None:
        time.sleep(0.3)
        with make_queue(db) as other:
            other.send(tasks(1))

    thread = threading.Thread(target=send_later)
    start = time.monotonic()
    thread.start()
    messages = queue.receive(1, LONG, wait_seconds=10)
    thread.join()
    assert [m.task_id for m in messages] == ["t00000"]
    assert 0.2 < time.monotonic() - start < 5
    start = time.monotonic()
    assert queue.receive(1, LONG, wait_seconds=0.3) == []
    assert time.monotonic() - start >= 0.3


def test_a_locked_file_is_waited_for_not_an_error(queue: SQLiteQueue, db: Path) -> None:
    """Another process holds the write lock for a second: receive waits and then succeeds."""
    queue.send(tasks(1))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\n"
            "time.sleep(1.0)\nc.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        messages = queue.receive(1, LONG)
        waited = time.monotonic() - start
    finally:
        holder.wait(30)
    assert [m.task_id for m in messages] == ["t00000"]
    assert waited > 0.2  # it waited for the other process instead of failing


# -- ack, retry, dead letters -----------------------------------------------------------------


def test_ack_completes(queue: SQLiteQueue) -> None:
    queue.send(tasks(3))
    queue.ack(queue.receive(2, LONG))
    queue.ack([])
    stats = queue.stats()
    assert (stats.completed, stats.visible, stats.leased, stats.remaining) == (2, 1, 0, 1)


def test_attempts_are_counted_per_delivery_and_spent_ones_dead_letter(db: Path) -> None:
    with make_queue(db, max_attempts=2) as q:
        q.send(tasks(1))
        (m1,) = q.receive(1, LONG)
        assert q.retry(m1, error="first failure") is True
        (m2,) = q.receive(1, LONG)
        assert m2.attempt == 2
        assert q.retry(m2, error="second failure") is False
        assert q.receive(1, LONG) == []
        (letter,) = q.dead_letters()
        assert (letter.task, letter.attempts, letter.error) == (m1.task, 2, "second failure")
        assert q.stats().dead == 1 and q.stats().remaining == 0


def test_expired_leases_spend_attempts_too(db: Path) -> None:
    with make_queue(db, max_attempts=2) as q:
        q.send(tasks(1))
        q.receive(1, 0.1)
        time.sleep(0.2)
        assert q.receive(1, 0.1)[0].attempt == 2
        time.sleep(0.2)
        assert q.receive(1, LONG) == []
        (letter,) = q.dead_letters()
        assert letter.attempts == 2
        assert letter.error is not None and "lease expired on attempt 2 of 2" in letter.error


def test_dead_letter_at_once(queue: SQLiteQueue) -> None:
    queue.send(tasks(2))
    first, _ = queue.receive(2, LONG)
    queue.dead_letter(first, error="not retryable")
    assert [(d.task.id, d.error) for d in queue.dead_letters()] == [("t00000", "not retryable")]
    assert queue.stats().dead == 1 and queue.stats().leased == 1


def test_retry_with_a_delay(queue: SQLiteQueue) -> None:
    queue.send(tasks(2))
    later, soon = queue.receive(2, LONG)
    queue.retry(later, delay_seconds=LONG)
    retried_at = time.monotonic()
    queue.retry(soon, delay_seconds=1.0)
    stats = queue.stats()
    assert (stats.delayed, stats.visible, stats.leased) == (2, 0, 0)
    assert queue.receive(5, LONG) == []
    time.sleep(max(0.0, retried_at + 1.1 - time.monotonic()))
    (message,) = queue.receive(5, LONG)
    assert (message.task_id, message.attempt) == (soon.task_id, 2)
    assert queue.stats().delayed == 1


def test_release_gives_back_without_counting_the_attempt(queue: SQLiteQueue) -> None:
    queue.send(tasks(3))
    messages = queue.receive(3, LONG)
    queue.release(messages[:2])
    assert queue.stats().visible == 2 and queue.stats().leased == 1
    again = queue.receive(5, LONG)
    assert sorted(m.task_id for m in again) == ["t00000", "t00001"]
    assert {m.attempt for m in again} == {1}


def test_extend_renews_a_lease(queue: SQLiteQueue) -> None:
    queue.send(tasks(1))
    (message,) = queue.receive(1, 0.3)
    queue.extend([message], LONG)
    time.sleep(0.4)
    assert queue.receive(1, LONG) == []
    assert queue.stats().leased == 1
    queue.extend([message], 0.1)
    time.sleep(0.2)
    (again,) = queue.receive(1, LONG)
    assert again.attempt == 2


def test_an_old_receipt_cannot_touch_the_new_delivery(queue: SQLiteQueue) -> None:
    queue.send(tasks(1))
    (old,) = queue.receive(1, 0.1)
    time.sleep(0.2)
    (new,) = queue.receive(1, LONG)
    assert queue.retry(old, delay_seconds=LONG, error="late") is True  # no effect
    queue.release([old])
    queue.extend([old], 0.0)
    queue.dead_letter(old, error="late")
    stats = queue.stats()
    assert (stats.leased, stats.visible, stats.delayed, stats.dead) == (1, 0, 0, 0)
    # A late completion is still a completion; the current holder's ack is then a no-op.
    queue.ack([old])
    queue.ack([new])
    assert queue.stats().completed == 1 and queue.stats().remaining == 0


def test_redrive_all_or_chosen_ids(db: Path) -> None:
    with make_queue(db, max_attempts=1) as q:
        q.send(tasks(4))
        for message in q.receive(4, LONG):
            q.retry(message, error="boom")
        assert q.stats().dead == 4
        assert q.redrive(["t00001", "t00003", "unknown"]) == 2
        assert sorted(d.task.id for d in q.dead_letters()) == ["t00000", "t00002"]
        back = q.receive(5, LONG)
        assert sorted(m.task_id for m in back) == ["t00001", "t00003"]
        assert {m.attempt for m in back} == {1}  # fresh attempts
        assert q.redrive() == 2
        assert q.stats().dead == 0 and q.stats().visible == 2


def test_purge_forgets_everything(queue: SQLiteQueue) -> None:
    queue.send(tasks(5))
    queue.ack(queue.receive(1, LONG))
    queue.receive(1, LONG)
    queue.purge()
    stats = queue.stats()
    assert stats.as_dict() | {"approximate": False} == {
        "visible": 0,
        "leased": 0,
        "delayed": 0,
        "dead": 0,
        "inserted": 0,
        "completed": 0,
        "duplicates_skipped": 0,
        "remaining": 0,
        "approximate": False,
        "waiting": 0 if queue.tracks_dependencies else None,
        "blocked": 0 if queue.tracks_dependencies else None,
    }
    assert queue.send(tasks(5)).inserted == 5  # the ids are new again


def test_max_attempts_is_fixed_at_creation(db: Path) -> None:
    with make_queue(db) as q:
        assert q.max_attempts == DEFAULT_MAX_ATTEMPTS == 3
    with make_queue(db, max_attempts=9) as q:
        assert q.max_attempts == 3
    with pytest.raises(QueueURLError, match="at least 1"):
        make_queue(db.with_name("other.db"), max_attempts=0)


# -- stats ------------------------------------------------------------------------------------


def _stats_cost(q: SQLiteQueue) -> int:
    """SQLite virtual-machine steps that one `stats()` call takes."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    q._conn.set_progress_handler(count, 1)
    try:
        q.stats()
    finally:
        q._conn.set_progress_handler(None, 1)
    return steps


def test_stats_cost_does_not_grow_with_the_queue(tmp_path: Path) -> None:
    """From counters and an index range, never a scan: 20x the rows, about the same work."""
    costs = []
    for n in (2_000, 40_000):
        with make_queue(tmp_path / f"q{n}.db") as q:
            q.send(tasks(n))
            q.receive(10, LONG)
            for message in q.receive(5, LONG):
                q.retry(message, delay_seconds=LONG)
            q.ack(q.receive(20, LONG))
            stats = q.stats()
            assert (stats.leased, stats.delayed, stats.completed) == (10, 5, 20)
            assert stats.visible == n - 35
            costs.append(_stats_cost(q))
    assert costs[1] < 1.5 * costs[0] + 50, costs


# -- URLs and backends ------------------------------------------------------------------------


def test_sqlite_urls() -> None:
    assert parse_sqlite_url("sqlite:///rel/q.db")[:2] == (Path("rel/q.db"), "tasks")
    assert parse_sqlite_url("sqlite:////abs/q.db")[:2] == (Path("/abs/q.db"), "tasks")
    assert parse_sqlite_url("q.db?name=job-1")[:2] == (Path("q.db"), "job-1")
    for bad, words in [
        ("sqlite://host/q.db", "has no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///q.db?name=a;drop", "queue name"),
    ]:
        with pytest.raises(QueueURLError, match=words):
            parse_sqlite_url(bad)


def test_open_queue_picks_sqlite_and_reads_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}?name=job&max_attempts=6"
    q = open_queue(url)
    try:
        assert isinstance(q, SQLiteQueue)
        assert (q.name, q.max_attempts, q.url) == ("job", 6, url)
    finally:
        q.close()
    q = open_queue(str(tmp_path / "bare.db"), max_attempts=4)
    try:
        assert isinstance(q, SQLiteQueue) and q.max_attempts == 4
    finally:
        q.close()
    with pytest.raises(QueueURLError, match="unknown option"):
        open_queue(f"sqlite:///{tmp_path / 'b.db'}?colour=red")
    with pytest.raises(QueueURLError, match="whole number"):
        open_queue(f"sqlite:///{tmp_path / 'b.db'}?max_attempts=many")
    assert event_queue_url(url) == f"sqlite:///{tmp_path / 'a.db'}?name=job-events"


def test_unknown_scheme_and_non_url_errors() -> None:
    with pytest.raises(QueueURLError) as caught:
        backend_class("kafka://broker/topic")
    message = str(caught.value)
    assert "unknown queue URL scheme 'kafka://'" in message
    for scheme in ("sqlite://", "redis://", "rediss://", "sqs://"):
        assert scheme in message
    with pytest.raises(QueueURLError, match=r"is not a queue URL.*sqlite:///path/to/queue.db"):
        backend_class("my-job")


def test_missing_backend_library_names_the_pip_extra() -> None:
    code = (
        "import sys\nsys.modules['redis'] = None\n"
        "from taskfleet.queues import open_queue\n"
        "from taskfleet.errors import MissingExtraError\n"
        "try:\n    open_queue('redis://127.0.0.1:1/0?name=job')\n"
        "except MissingExtraError as exc:\n    print(exc.extra, '|', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("redis |")
    assert "pip install 'taskfleet[redis]'" in result.stdout
    assert issubclass(MissingExtraError, TaskfleetError)


def test_only_tasks_that_wait_for_two_or_more_get_a_count_and_old_counts_still_work(
    db: Path,
) -> None:
    """A task that waits for one task has no row in the counts table (it is released when
    that task completes); a file written before that, where such a task has a count of 1,
    releases it once too."""
    q = SQLiteQueue(db)
    q.send(
        [
            Task("prep", {}),
            Task("part-1", {}, after=("prep",)),
            Task("part-2", {}, after=("prep",)),
            Task("old", {}, after=("prep",)),
            Task("agg", {}, after=("part-1", "part-2")),
        ]
    )
    with sqlite3.connect(db) as conn:
        counted = dict(conn.execute('SELECT task_id, pending FROM "q_tasks_waits"').fetchall())
        assert counted == {"agg": 2}
        # what an earlier version wrote for a task that waits for one
        conn.execute("INSERT INTO \"q_tasks_waits\"(task_id, pending) VALUES ('old', 1)")
    assert q.stats().waiting == 4

    first = q.receive(10, LONG)
    assert [m.task.id for m in first] == ["prep"]
    q.ack(first, {"prep": {"rows": 3}})
    second = q.receive(10, LONG)
    assert sorted(m.task.id for m in second) == ["old", "part-1", "part-2"]
    assert all(m.dependency_results == {"prep": {"rows": 3}} for m in second)
    q.ack([m for m in second if m.task.id == "part-1"], {"part-1": 1})
    assert not q.receive(10, LONG)  # agg still waits for part-2
    q.ack([m for m in second if m.task.id != "part-1"], {"part-2": 2.5, "old": None})
    last = q.receive(10, LONG)
    assert [(m.task.id, m.dependency_results) for m in last] == [
        ("agg", {"part-1": 1, "part-2": 2.5})
    ]
    q.ack(last)
    stats = q.stats()
    assert (stats.completed, stats.waiting, stats.visible) == (5, 0, 0)
    q.close()
