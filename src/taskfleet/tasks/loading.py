"""Load a task source into a queue: what `taskfleet load-queue` and a local worker run.

The source is read as validated batches (`taskfleet.tasks.batches`), a block at a time in a
thread of its own, and handed to `Queue.send_batches`. A backend with a native bulk path (the
embedded SQLite queue) inserts each batch whole and finds repeated ids in its own unique index;
for the others the base class finds them and feeds `send`. Either way the messages for bad
input are those of `iter_tasks`.
"""

from __future__ import annotations

import contextlib
import queue as thread_queue
import threading
from collections.abc import Callable, Generator, Iterator

from taskfleet.queues.base import Queue, SendResult
from taskfleet.tasks import TaskSource
from taskfleet.tasks.batches import TaskBatch, iter_task_batches

# How long a load that stops early waits for its read-ahead thread to stop.
READER_STOP_SECONDS = 2.0

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
) -> SendResult:
    """Validate `source` and send its tasks to `queue`; `on_progress(n)` hears the number of
    tasks read so far. Raises `TaskFileError` at the first bad entry (see `Queue.send` for
    what a backend has inserted by then). With `update`, tasks already in the queue take the
    source's data (`Queue.send_updates`, which `rerun_completed` is passed to)."""
    batches = iter_task_batches(source, skip=skip, limit=limit, check_duplicates=False)
    # Closed here, not when the garbage collector gets to it: an error's traceback keeps the
    # generator alive, and with it a reader thread waiting to hand over a batch.
    with contextlib.closing(_read_ahead(batches)) as read_ahead:
        counted = _counted_batches(read_ahead, on_progress)
        if update:
            return queue.send_updates(counted, rerun_completed=rerun_completed)
        return queue.send_batches(counted)


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


def _read_ahead(batches: Generator[TaskBatch, None, None], depth: int = 2) -> Iterator[TaskBatch]:
    """Read and build batches in a thread while the caller inserts the previous ones.

    SQLite releases the GIL while it runs a statement, so on two cores the reading, checking
    and JSON building of the next batch overlap the insert of this one (docs/design-notes.md
    has the figures). Errors from the reader are raised here, in the caller's
    thread; when the caller stops early (an error of its own), the reader stops and closes its
    file.
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
            batch, error = handoff.get()
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
