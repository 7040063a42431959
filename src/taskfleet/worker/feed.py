"""A local run's tasks loaded as the run goes, instead of all of them before it starts.

A throwaway `LocalTaskQueue` run (its queue is `memory://`, nothing to resume) need not load
every task before the first one starts: the children would wait for the whole load. The
supervisor instead loads one batch before the children start, then, in each turn after it has
handed the children their tasks, a batch or two more while fewer than `LOW_WATER` tasks wait in
the queue: the children run the first tasks while the supervisor reads and checks the next ones
(python-task-queue's `insert_all` runs as it inserts, too).

The rule that keeps dependencies right: a batch in which a task waits for others (`after`) is
loaded together with every task left in the source, in one send. A task that waits for nothing
names no other task, so the batches sent before it need nothing sent after them; the queue
then checks the tasks that wait (unknown ids, cycles) over all the rest of the load at once,
as it checks a whole load.

What the source refuses (a task that is not JSON, a duplicate id) is raised where the feed
reads it: by then the tasks before it may have run, as they would have with python-task-queue.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from taskfleet.queues.base import Queue, SendResult
from taskfleet.tasks.batches import TaskBatch

#: Tasks per batch read from the source: small enough that the first tasks start soon.
FEED_BATCH = 512
#: Load another batch once fewer tasks than this wait in the queue (a local run's receive).
LOW_WATER = 4096
#: Batches loaded in one turn at most (the children are fed first, then the feed tops up).
TOP_UP_BATCHES = 2


class TaskFeed:
    """Loads a source's batches into a queue as the run consumes them."""

    def __init__(self, queue: Queue, batches: Iterator[TaskBatch]) -> None:
        self.queue = queue
        self._batches = batches
        self.exhausted = False
        self.loaded = SendResult()

    def top_up(self, waiting: int, most: int = TOP_UP_BATCHES) -> None:
        """Load up to `most` batches while fewer than `LOW_WATER` tasks wait (`waiting` do
        now): a few at a time, so that a turn of the supervisor stays short."""
        for _ in range(most):
            if self.exhausted or waiting >= LOW_WATER:
                return
            waiting += self.load_next()

    def load_next(self) -> int:
        """Load the next batch (the first one, or one more because the queue ran empty);
        returns how many tasks it inserted (0 once the source is over)."""
        if self.exhausted:
            return 0
        batch = next(self._batches, None)
        if batch is None:
            self.exhausted = True
            return 0
        if _waits(batch):
            result = self.queue.send_batches(self._with_the_rest(batch))
            self.exhausted = True
        else:
            result = self.queue.send_batches([batch])
        self.loaded += result
        return result.inserted

    def _with_the_rest(self, batch: TaskBatch) -> Iterator[TaskBatch]:
        yield batch
        yield from self._batches

    def close(self) -> None:
        """Stop reading the source (a run stopped early: its file is closed now)."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        self.exhausted = True


def _waits(batch: TaskBatch) -> bool:
    """A task of the batch waits for others. The reader's fast path gives the `after` lists,
    the others the tasks; a body is parsed only when it names `after` somewhere, so that a task
    whose data has an "after" key does not make the feed load the rest of the source at once."""
    if batch.afters is not None:
        return bool(batch.afters)
    if batch.tasks is not None:
        return any(task.after for task in batch.tasks)
    return any('"after"' in body and orjson.loads(body).get("after") for body in batch.bodies)
