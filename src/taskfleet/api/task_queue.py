"""`TaskQueue(url)`: python-task-queue's client API over any taskfleet queue.

Insert code-tasks (or plain `{"id", "data"}` tasks) from any iterable, read the queue's
counts, and `poll()`: run the queue's tasks in this process, as python-task-queue's `poll`
does, on the queue protocol. Every attempt's outcome goes through the runtime's attempt owner
(`taskfleet.worker.attempts`: the same retry policy, backoff, dead letters and events as a
`Worker`), so nothing here decides a retry. The leases of the tasks this process holds are
renewed in the background while a task runs.

Only `insert` creates a queue (`open_queue(url, create=True)`); every other method opens an
existing one, so a mistyped URL is an error that says so rather than an empty queue.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue as thread_queue
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from taskfleet.api.marking import as_task, is_one_task, run_call
from taskfleet.queues import DeadLetter, Message, Queue, open_queue
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.worker.attempts import NOT_RETRYABLE, Attempts, RetryPolicy, RunCounts

log = logging.getLogger("taskfleet.api")

#: Longest wait of an idle `poll` between looks at the queue (a receive that waits this long
#: returns at once when a task arrives on backends that can wait; the others look again).
POLL_WAIT_CAP = 20.0
#: Most tasks one `poll` leases at once when tasks are short (one at a time when they are not).
POLL_BATCH_MAX = 16
#: A task shorter than this lets `poll` lease the next ones in a batch.
SHORT_TASK_SECONDS = 0.05
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


class _Renewer:
    """Renews the leases of the tasks `poll` holds, every third of the lease, in a thread."""

    def __init__(self, queue: Queue, lease_seconds: float) -> None:
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.held: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskfleet-renew", daemon=True)
        self._thread.start()

    def hold(self, messages: Iterable[Message]) -> None:
        with self._lock:
            self.held = list(messages)

    def done(self, message: Message) -> None:
        with self._lock:
            self.held = [m for m in self.held if m is not message]

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._lock:
                held = list(self.held)
            if held:
                try:
                    self.queue.extend(held, self.lease_seconds)
                except Exception as exc:  # the next renewal tries again
                    log.warning("renewing leases failed: %s", redact(str(exc)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Poll:
    """One `TaskQueue.poll`: lease, run in this process, report each outcome to the attempt
    owner; stop when told to (checked after every task) or when the queue stays empty."""

    def __init__(
        self,
        queue: Queue,
        attempts: Attempts,
        lease_seconds: float,
        verbose: bool,
        stop_fn: Callable[..., Any] | None,
        max_tasks: int | None,
    ) -> None:
        self.queue = queue
        self.attempts = attempts
        self.lease_seconds = lease_seconds
        self.verbose = verbose
        self.stop_fn = stop_fn
        self.max_tasks = max_tasks
        self.renewer = _Renewer(queue, lease_seconds)
        self.started = time.monotonic()
        self.executed = 0
        self.tries = 0  # empty receives in a row

    def should_stop(self) -> bool:
        if self.max_tasks is not None and self.executed >= self.max_tasks:
            return True
        return self.stop_fn is not None and _stop_requested(
            self.stop_fn, self.executed, time.monotonic() - self.started, self.tries
        )

    def run(self, idle_seconds: float | None) -> None:
        idle_since = time.monotonic()
        batch = 1
        while not self.should_stop():
            want = batch if self.max_tasks is None else min(batch, self.max_tasks - self.executed)
            wait = 0.0
            if self.tries:
                wait = min(POLL_WAIT_CAP, 0.1 * 2**self.tries) * random.random()
            if idle_seconds is not None:
                wait = min(wait, max(0.0, idle_since + idle_seconds - time.monotonic()))
            received = self.queue.receive(want, self.lease_seconds, wait_seconds=wait)
            self.attempts.counts.received += len(received)
            self.attempts.dead_lettered_by_queue(received.dead_lettered)
            if not received:
                self.tries += 1
                if idle_seconds is not None and time.monotonic() - idle_since >= idle_seconds:
                    return
                continue
            self.tries = 0
            self.renewer.hold(received)
            slowest = self.run_batch(list(received))
            self.attempts.settle()
            idle_since = time.monotonic()
            batch = min(batch * 2, POLL_BATCH_MAX) if slowest < SHORT_TASK_SECONDS else 1

    def run_batch(self, messages: list[Message]) -> float:
        """Run leased tasks one after the other; returns the longest one's seconds. The tasks
        not started when told to stop (or on Ctrl-C) are given back, their attempt not
        counted."""
        slowest = 0.0
        for index, message in enumerate(messages):
            try:
                elapsed = self.run_one(message)
            except (KeyboardInterrupt, SystemExit):
                self.give_back(messages[index:])
                raise
            self.renewer.done(message)
            self.executed += 1
            self.attempts.settle_if_due(time.monotonic())
            slowest = max(slowest, elapsed)
            if index + 1 < len(messages) and self.should_stop():
                self.give_back(messages[index + 1 :])
                break
        return slowest

    def run_one(self, message: Message) -> float:
        """Run one task and report how it ended; returns its seconds."""
        pid = os.getpid()
        begun = time.monotonic()
        try:
            result = run_call(message.task.data)
        except Exception as exc:
            elapsed = time.monotonic() - begun
            raw = {
                "elapsed": elapsed,
                "exception": f"{type(exc).__name__}: {exc}",
                "stack_trace": traceback.format_exc(),
                "retryable": getattr(exc, NOT_RETRYABLE, False) is not True,
            }
            self.attempts.raised(message, 0, pid, raw)
            if self.verbose:
                print(f"{message.task_id}: {raw['exception']}", file=sys.stderr)
            return elapsed
        elapsed = time.monotonic() - begun
        raw = {"retry": False, "elapsed": elapsed, **_result_fields(result)}
        self.attempts.returned(message, 0, pid, raw)
        if self.verbose:
            print(f"{message.task_id}: done in {elapsed:.3f} s", file=sys.stderr)
        return elapsed

    def give_back(self, messages: list[Message]) -> None:
        self.renewer.hold([])
        self.attempts.settle()
        self.queue.release(messages)
        self.attempts.counts.released += len(messages)


def _result_fields(result: Any) -> dict[str, Any]:
    """A task's result for its event: itself if JSON, else its str() and type name."""
    try:
        orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
        return {"result": result}
    except TypeError:
        return {"result": str(result), "result_type": type(result).__name__}


def _stop_requested(stop_fn: Callable[..., Any], executed: int, elapsed: float, tries: int) -> bool:
    """Call `stop_fn` with those of `executed`, `elapsed_time` and `tries` it takes."""
    offered = {"executed": executed, "elapsed_time": elapsed, "tries": tries}
    try:
        parameters = inspect.signature(stop_fn).parameters
    except (TypeError, ValueError):
        return bool(stop_fn())
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in parameters}
    return bool(stop_fn(**kwargs))


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
        poll = _Poll(queue, attempts, settings.lease_seconds, verbose, stop_fn, max_tasks)
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
