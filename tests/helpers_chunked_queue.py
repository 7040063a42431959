"""Two test backends whose `send` is not one transaction, as remote queues' sends are not.

They are real, working queues (the SQLite queue, sending each batch of 100 in its own
transaction), serving the schemes `chunked://` and `chunked-raw://` once this module is
imported (a backend class registers its schemes when it is defined). `ChunkedQueue` follows
the `SendInterrupted` contract; `RawChunkedQueue` lets the iterable's error through unchanged,
as a backend that ignores the contract would. They let the tests check what `taskfleet
load-queue` tells the user after a partial load, whatever the real backends do.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import ClassVar

from taskfleet.queues import Queue, SendInterrupted, SendResult
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task

BATCH = 100


class ChunkedQueue(SQLiteQueue):
    """Commits every batch on its own and raises SendInterrupted with the exact count."""

    schemes: ClassVar[tuple[str, ...]] = ("chunked",)
    example_url: ClassVar[str] = "chunked:///path/to/queue.db"
    atomic_send: ClassVar[bool] = False
    # Like the remote backends, no bulk path: loads go through `send`.
    bulk_load: ClassVar[bool] = False
    send_batches = Queue.send_batches

    def send(self, tasks: Iterable[Task], batch_size: int = 0) -> SendResult:
        result = SendResult()
        iterator = iter(tasks)
        while True:
            try:
                chunk = list(islice(iterator, batch_size or BATCH))
            except Exception as exc:
                raise SendInterrupted(
                    inserted=result.inserted, cause=exc, already_present=result.already_present
                ) from exc
            if not chunk:
                return result
            result += super().send(chunk)


class RawChunkedQueue(ChunkedQueue):
    """Like ChunkedQueue, but lets the iterable's error through: the CLI cannot know a count."""

    schemes: ClassVar[tuple[str, ...]] = ("chunked-raw",)
    example_url: ClassVar[str] = "chunked-raw:///path/to/queue.db"

    def send(self, tasks: Iterable[Task], batch_size: int = 0) -> SendResult:
        result = SendResult()
        iterator = iter(tasks)
        while chunk := list(islice(iterator, batch_size or BATCH)):
            result += SQLiteQueue.send(self, chunk)
        return result
