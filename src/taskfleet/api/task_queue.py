"""`TaskQueue(url)`: python-task-queue's client API over any taskfleet queue.

Insert code-tasks (or plain `{"id", "data"}` tasks) from any iterable, read the queue's
counts, and `poll()`: run the queue's tasks in this process, as python-task-queue's `poll`
does, on the queue protocol (`taskfleet.api.polling`). Every attempt's outcome goes through
the runtime's attempt owner (`taskfleet.worker.attempts`: the same retry policy, backoff, dead
letters and events as a `Worker`), so nothing here decides a retry.

Only `insert` creates a queue (`open_queue(url, create=True)`); every other method opens an
existing one, so a mistyped URL is an error that says so rather than an empty queue.
"""

from __future__ import annotations

import queue as thread_queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from taskfleet.api.marking import as_task, is_one_task
from taskfleet.api.polling import Poll
from taskfleet.queues import DeadLetter, Message, Queue, open_queue
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.worker.attempts import Attempts, RetryPolicy, RunCounts

#: Tasks an insert makes per chunk in its maker thread, and chunks made ahead of the inserts.
_CHUNK, _CHUNKS_AHEAD = 1024, 4
#: How often an insert's progress line on a terminal is redrawn, in tasks.
_PROGRESS_EVERY = 1024


class Count(int):
    """A count of the queue's tasks; `approximate` where the backend estimates (SQS)."""

    approximate: bool

    def __new__(cls, value: int, approximate: bool = False) -> Count:
        count = super().__new__(cls, value)
        count.approximate = approximate
        return count

    def __repr__(self) -> str:
        return f"~{int(self)}" if self.approximate else str(int(self))


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What an insert did: tasks inserted, and tasks whose id the queue held already."""

    inserted: int
    already_present: int


class _Progress:
    """`inserting: N / TOTAL tasks` on stderr, redrawn in place, only on a terminal."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.count = 0

    def tick(self) -> None:
        self.count += 1
        if self.count % _PROGRESS_EVERY == 0:
            self.draw()

    def draw(self, end: str = "") -> None:
        of = f" / {self.total:,}" if self.total is not None else ""
        sys.stderr.write(f"\rinserting: {self.count:,}{of} tasks{end}")
        sys.stderr.flush()


class TaskQueue:
    """A queue named by URL (any backend), with python-task-queue's methods; see the module
    docstring. `max_attempts` applies when `insert` creates the queue."""

    def __init__(self, url: str, *, max_attempts: int | None = None) -> None:
        self.url = url
        self.max_attempts = max_attempts
        self._queue: Queue | None = None

    def __repr__(self) -> str:
        return f"TaskQueue({redact(self.url)!r})"

    def _open(self, *, create: bool = False) -> Queue:
        if self._queue is None:
            self._queue = open_queue(self.url, max_attempts=self.max_attempts, create=create)
        return self._queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inserting --------------------------------------------------------------------------

    def insert(self, tasks: Iterable[Any] | Any, total: int | None = None) -> InsertResult:
        """Insert tasks from any iterable (a generator is read as it goes, never held whole),
        creating the queue if needed. Ids already in the queue are skipped and counted. A
        single task works too. On a terminal, a progress line counts the tasks (`total`: how
        many to expect, when `len()` cannot say)."""
        items: Iterable[Any] = [tasks] if is_one_task(tasks) else tasks
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        progress = _Progress(total) if sys.stderr.isatty() else None
        result = self._open(create=True).send(_converted(items, progress))
        if progress is not None:
            progress.draw(end="\n")
        return InsertResult(result.inserted, result.already_present)

    # -- counts -----------------------------------------------------------------------------

    def _count(self, which: str) -> Count | None:
        stats = self._open().stats()
        value = stats.remaining if which == "remaining" else getattr(stats, which)
        return None if value is None else Count(value, stats.approximate)

    @property
    def enqueued(self) -> Count:
        """Tasks not yet completed or dead-lettered (visible, leased or waiting to retry)."""
        return self._count("remaining")  # type: ignore[return-value]

    @property
    def inserted(self) -> Count | None:
        """Tasks ever inserted (None where the backend keeps no total: SQS)."""
        return self._count("inserted")

    @property
    def completed(self) -> Count | None:
        """Tasks completed (None where the backend keeps no total: SQS)."""
        return self._count("completed")

    @property
    def leased(self) -> Count:
        """Tasks leased by a consumer now."""
        return self._count("leased")  # type: ignore[return-value]

    @property
    def dead(self) -> Count:
        """Tasks in the dead letters."""
        return self._count("dead")  # type: ignore[return-value]

    # -- running ----------------------------------------------------------------------------

    def poll(
        self,
        lease_seconds: float = 60.0,
        verbose: bool = False,
        stop_fn: Callable[..., Any] | None = None,
        max_tasks: int | None = None,
        *,
        idle_seconds: float | None = None,
        event_log_file: str | None = None,
        **worker_options: Any,
    ) -> RunCounts:
        """Run the queue's code-tasks in this process until `stop_fn` says stop (it may take
        `executed`, `elapsed_time` and `tries`), `max_tasks` ran, or the queue stayed empty
        for `idle_seconds` (None: poll forever, as python-task-queue does).

        Failures follow the worker's policy and options (`retry_on_exception=True`,
        `backoff_base=...`, any `Worker` option by name; `TASKFLEET_*` variables too): a task
        that raises is dead-lettered unless retries are asked for. Events go to
        `event_log_file` if given. Returns the run's counts.
        """
        from taskfleet.events.schema import hostname
        from taskfleet.events.sinks import open_event_sink
        from taskfleet.worker.settings import resolve_settings

        settings = resolve_settings(
            {}, overrides={"lease_seconds": lease_seconds, **worker_options}
        )
        queue = self._open()
        counts = RunCounts()
        sink = open_event_sink(event_log_file)
        attempts = Attempts(
            queue,
            sink,
            RetryPolicy.from_settings(settings, queue.max_attempts),
            counts,
            hostname=hostname(),
        )
        poll = Poll(queue, attempts, settings.lease_seconds, verbose, stop_fn, max_tasks)
        try:
            poll.run(idle_seconds)
        finally:
            poll.renewer.stop()
            attempts.settle()
            sink.close()
        return counts

    # -- one task at a time, and the queue as a whole ------------------------------------------

    def lease(self, seconds: float = 60.0) -> Message | None:
        """Lease one task for `seconds` (None if none is visible); `delete` it when done."""
        received = self._open().receive(1, seconds)
        return received[0] if received else None

    def delete(self, task: Message | Task | str | Any) -> None:
        """Mark a task done: a leased `Message` by its lease, anything else by its id (a
        `Task`, a task object, an id; where the backend lists leases)."""
        queue = self._open()
        if isinstance(task, Message):
            queue.ack([task])
        else:
            queue.ack_ids([task if isinstance(task, str) else as_task(task).id])

    def release_all(self) -> int:
        """Give every leased task back at once (when no consumer is running)."""
        return self._open().release_all()

    def purge(self) -> None:
        """Delete every task, dead letter and count of the queue."""
        self._open().purge()

    def dead_letters(self) -> list[DeadLetter]:
        """The dead letters, with their attempts and last error."""
        return list(self._open().dead_letters())

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters (all, or these ids) back with fresh attempts; returns how many."""
        return self._open().redrive(ids)


def _converted(items: Iterable[Any], progress: _Progress | None) -> Iterator[Task]:
    """The items as tasks, made in a thread a few chunks ahead of the caller's inserts.

    Making a code-task is Python work, and the queue's insert mostly is not (SQLite, a socket,
    a file system release the GIL), so the two overlap. An item that cannot be a task is
    raised here, after the tasks before it."""
    handoff: thread_queue.Queue[tuple[list[Task], BaseException | None]] = thread_queue.Queue(
        _CHUNKS_AHEAD
    )
    stop = threading.Event()

    def offer(chunk: list[Task], error: BaseException | None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((chunk, error), timeout=0.1)
                return True
            except thread_queue.Full:
                continue
        return False

    def make() -> None:
        iterator = iter(items)
        chunk: list[Task] = []
        try:
            while True:
                chunk = []
                for item in islice(iterator, _CHUNK):
                    chunk.append(as_task(item))
                if not chunk:
                    offer([], None)
                    return
                if not offer(chunk, None):
                    return
        except BaseException as exc:  # raised in the caller's thread, after the tasks before it
            offer(chunk, exc)

    threading.Thread(target=make, name="taskfleet-insert-maker", daemon=True).start()
    try:
        while True:
            chunk, error = handoff.get()
            for task in chunk:
                yield task
                if progress is not None:
                    progress.tick()
            if error is not None:
                raise error
            if not chunk:
                return
    finally:
        stop.set()
