"""Load a task source into a queue: what `taskfleet load-queue` and a local worker run.

The source is read as validated batches (`taskfleet.tasks.batches`), a block at a time in a
thread of its own, and handed to `Queue.send_batches`. A backend with a native bulk path (the
embedded SQLite queue) inserts each batch whole and finds repeated ids in its own unique index;
for the others the base class finds them and feeds `send`. Either way the messages for bad
input are those of `iter_tasks`.

Where a load cut short by a bad entry could not simply be run again after the fix (a backend
whose send is neither one transaction nor skips ids it holds: an SQS standard queue would hold
the first part twice), the whole source is validated before anything is sent: its tasks go to a
temporary JSON Lines file as they are checked, and the load reads that file. A load can be
asked to stop (`stop`, set by the first Ctrl-C of `taskfleet load-queue`): it stops between two
small slices of tasks, so that the backend says exactly how many it sent (`SendInterrupted`).
"""

from __future__ import annotations

import contextlib
import os
import queue as thread_queue
import signal
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from taskfleet.errors import TaskfleetError
from taskfleet.queues.base import Queue, SendInterrupted, SendResult
from taskfleet.tasks import TaskSource
from taskfleet.tasks.batches import TaskBatch, iter_task_batches

# How long a load that stops early waits for its read-ahead thread to stop.
READER_STOP_SECONDS = 2.0
# How often a load waiting for its reader looks at `stop`.
STOP_POLL_SECONDS = 0.1
# Tasks between two looks at `stop` for a backend that sends task by task: a few round trips.
STOP_SLICE = 100

Progress = Callable[[int], None]
# What the read-ahead thread hands over: a batch, the end (None, None), or its error.
_Handed = tuple[TaskBatch | None, BaseException | None]


def load_tasks_into(
    queue: Queue,
    source: TaskSource,
    *,
    skip: int = 0,
    limit: int | None = None,
    on_progress: Progress | None = None,
    update: bool = False,
    rerun_completed: bool = False,
    stop: threading.Event | None = None,
) -> SendResult:
    """Validate `source` and send its tasks to `queue`; `on_progress(n)` hears the number of
    tasks read so far. Raises `TaskFileError` at the first bad entry (see `Queue.send` for
    what a backend has inserted by then; where the source is checked first, `SendInterrupted`
    with nothing inserted); when `stop` is set, `KeyboardInterrupt` from within the tasks the
    backend is consuming, so that it counts what it sent. With `update`, tasks already in the
    queue take the source's data (`Queue.send_updates`, which `rerun_completed` is passed
    to)."""
    if queue.atomic_send or queue.idempotent_send:
        return _load(queue, source, skip, limit, on_progress, stop, update, rerun_completed)
    import tempfile  # here: only such a queue needs it, and a worker's start does not

    with tempfile.TemporaryDirectory(prefix="taskfleet-load-") as folder:
        checked = os.path.join(folder, "tasks.jsonl")
        try:
            _validate_into(source, checked, skip, limit, stop)
        except (TaskfleetError, KeyboardInterrupt) as exc:
            raise SendInterrupted(0, exc) from exc
        return _load(queue, checked, 0, None, on_progress, stop, update, rerun_completed)


def _load(
    queue: Queue,
    source: TaskSource,
    skip: int,
    limit: int | None,
    on_progress: Progress | None,
    stop: threading.Event | None,
    update: bool = False,
    rerun_completed: bool = False,
) -> SendResult:
    batches = iter_task_batches(source, skip=skip, limit=limit, check_duplicates=False)
    if not queue.shared_between_processes:
        # A queue of this process (memory://) inserts in Python, holding the GIL: a reader
        # thread would only take turns with it, and costs its handoffs.
        with contextlib.closing(batches):
            counted = _counted_batches(batches, on_progress)
            return _send(queue, counted, stop, update, rerun_completed)
    # Closed here, not when the garbage collector gets to it: an error's traceback keeps the
    # generator alive, and with it a reader thread waiting to hand over a batch.
    with contextlib.closing(_read_ahead(batches, stop, queue.bulk_load)) as read_ahead:
        counted = _counted_batches(read_ahead, on_progress)
        return _send(queue, counted, stop, update, rerun_completed)


def _send(
    queue: Queue,
    counted: Iterator[TaskBatch],
    stop: threading.Event | None,
    update: bool,
    rerun_completed: bool,
) -> SendResult:
    """Hand the batches to the queue (a load, or an update of the tasks it holds)."""
    if stop is not None:
        counted = _until_stopped(counted, stop, 0 if queue.bulk_load else STOP_SLICE)
    if update:
        return queue.send_updates(counted, rerun_completed=rerun_completed)
    return queue.send_batches(counted)


def _validate_into(
    source: TaskSource, path: str, skip: int, limit: int | None, stop: threading.Event | None
) -> None:
    """Read and check all of `source` (ids repeated within it too), writing its tasks to the
    JSON Lines file `path`; the first bad entry raises before anything was sent."""
    batches = iter_task_batches(source, skip=skip, limit=limit, check_duplicates=True)
    with (
        contextlib.closing(_read_ahead(batches, stop, bulk=False)) as read_ahead,
        open(path, "w", encoding="utf-8") as out,
    ):
        for batch in read_ahead:
            # A raw line break in JSON text can only be white space between tokens (one in a
            # string is escaped), so a task from a pretty-printed list stays one line.
            out.write("".join(body.replace("\n", " ") + "\n" for body in batch.bodies))


def _until_stopped(
    batches: Iterator[TaskBatch], stop: threading.Event, slice_size: int
) -> Iterator[TaskBatch]:
    """The batches, in slices of `slice_size` (0: whole), until `stop` is set: then
    `KeyboardInterrupt`, raised where the backend reads its tasks."""
    for batch in batches:
        step = slice_size or len(batch)
        for start in range(0, len(batch), step):
            if stop.is_set():
                raise KeyboardInterrupt("SIGINT")
            yield batch if step >= len(batch) else batch.sliced(start, start + step)


@contextlib.contextmanager
def stop_on_first_interrupt() -> Iterator[threading.Event]:
    """For a load run by a command: the first Ctrl-C sets the event the load watches (it
    stops between two slices, and the backend counts what it sent); a second one interrupts
    at once. Outside the main thread, or under a handler of the caller's, nothing changes."""
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt("SIGINT")
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _counted_batches(
    batches: Iterator[TaskBatch], on_progress: Progress | None
) -> Iterator[TaskBatch]:
    if on_progress is None:
        yield from batches
        return
    count = 0
    for batch in batches:
        yield batch
        count += len(batch)
        on_progress(count)


def _read_ahead(
    batches: Generator[TaskBatch, None, None],
    stop_load: threading.Event | None,
    bulk: bool,
    depth: int = 2,
) -> Iterator[TaskBatch]:
    """Read and build batches in a thread while the caller inserts the previous ones.

    SQLite releases the GIL while it runs a statement, so on two cores the reading, checking
    and JSON building of the next batch overlap the insert of this one (docs/design-notes.md
    has the figures). Errors from the reader are raised here, in the caller's
    thread; when the caller stops early (an error of its own), the reader stops and closes its
    file. When `stop_load` is set, `KeyboardInterrupt` is raised here within `STOP_POLL_SECONDS`,
    even while the reader waits for a stalled source (a pipe, a network file).
    """
    handoff: thread_queue.Queue[_Handed] = thread_queue.Queue(depth)
    stop = threading.Event()

    def offer(item: _Handed) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except thread_queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if bulk:  # only a native bulk path (SQLite's) reads the batch as one object
                    batch.json_object()
                if not offer((batch, None)):
                    return
            offer((None, None))
        except BaseException as exc:  # handed to the caller, who raises it
            offer((None, exc))
        finally:
            batches.close()

    reader = threading.Thread(target=read, name="taskfleet-load-reader", daemon=True)
    reader.start()
    try:
        while True:
            try:
                batch, error = handoff.get(timeout=STOP_POLL_SECONDS)
            except thread_queue.Empty:
                if stop_load is not None and stop_load.is_set():
                    raise KeyboardInterrupt("SIGINT") from None
                continue
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch
    finally:
        stop.set()
        # The reader notices within one block. A read that hangs (a stalled pipe or network
        # file after Ctrl-C) is not waited for: the thread is a daemon and exits with us.
        reader.join(timeout=READER_STOP_SECONDS)
