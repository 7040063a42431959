"""Many service calls in flight at once, for the backends whose every call is a round trip to a
cloud service (SQS, Pub/Sub): a load sends batches from a few threads, and ack, extend and
release split their work into batches that go out together.

`Calls` owns the threads (made on first use, so that a queue that only reads starts none).
`send_in_flight` keeps a bounded number of batches in flight and counts what the service took:
whatever stops a send part way (a bad task, the service failing, Ctrl-C) waits for the batches
already out, so `SendInterrupted` says exactly how many tasks the service accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from taskfleet.queues.base import SendInterrupted, SendResult

Batch = TypeVar("Batch")


class Calls:
    """A backend's thread pool for calls in flight, made when first needed."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            return self._executor

    def parallel(self, fn: Callable[[Any], Any], batches: list[Any]) -> list[Any]:
        """`fn` over each batch, several in flight when there is more than one."""
        if len(batches) <= 1:
            return [fn(b) for b in batches]
        return list(self.pool().map(fn, batches))

    def send_in_flight(
        self, batches: Iterable[Batch], send: Callable[[Batch], int], result: SendResult
    ) -> SendResult:
        """`send` each batch (it returns how many tasks the service accepted), at most two per
        thread in flight; `result.inserted` counts what was accepted. Raises `SendInterrupted`
        with that count when anything stops the send, after the batches in flight are done."""
        in_flight: set[Future[int]] = set()

        def collect(done: Iterable[Future[int]]) -> None:
            error: BaseException | None = None
            for future in done:
                in_flight.discard(future)
                if future.exception() is not None:
                    error = error or future.exception()
                else:
                    result.inserted += future.result()
            if error is not None:
                raise error

        try:
            for batch in batches:
                if len(in_flight) >= 2 * self.threads:
                    collect(wait(in_flight, return_when=FIRST_COMPLETED).done)
                in_flight.add(self.pool().submit(send, batch))
            collect(wait(in_flight).done if in_flight else [])
        except BaseException as exc:  # Ctrl-C too: wait for what is in flight, and count it
            for future in wait(in_flight).done if in_flight else []:
                if future.exception() is None:
                    result.inserted += future.result()
            raise SendInterrupted(result.inserted, exc) from exc
        return result

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
