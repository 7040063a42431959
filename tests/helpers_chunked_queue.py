"""Two test backends whose `send` is not one transaction, as remote queues' sends are not.

They are real, working queues (the SQLite queue, sending each batch of 100 in its own
transaction), registered under the schemes `chunked://` and `chunked-raw://` by `register()`.
`ChunkedQueue` follows the `SendInterrupted` contract; `RawChunkedQueue` lets the iterable's
error through unchanged, as a backend that ignores the contract would. They let the tests check
what `taskfleet load-queue` tells the user after a partial load, before the Redis and SQS
backends implement the contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from taskfleet.queues import BACKENDS, SendInterrupted, SendResult
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task

BATCH = 100


class ChunkedQueue(SQLiteQueue):
    """Commits every batch on its own and raises SendInterrupted with the exact count."""

    atomic_send = False
    send_batches = None  # like the remote backends, no bulk path: loads go through `send`

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

    def send(self, tasks: Iterable[Task], batch_size: int = 0) -> SendResult:
        result = SendResult()
        iterator = iter(tasks)
        while chunk := list(islice(iterator, batch_size or BATCH)):
            result += SQLiteQueue.send(self, chunk)
        return result


def register() -> None:
    """Make `chunked:///path.db` and `chunked-raw:///path.db` open these backends."""
    BACKENDS["chunked"] = (__name__, "ChunkedQueue", None, None)
    BACKENDS["chunked-raw"] = (__name__, "RawChunkedQueue", None, None)
