"""`TaskQueue.poll`: run a queue's code-tasks in this process, on the queue protocol.

As python-task-queue's `poll` does: lease, run, delete, again; here every attempt's outcome
goes to the runtime's attempt owner (`taskfleet.worker.attempts`: the same retry policy,
backoff, dead letters and events as a `Worker`), the leases of the tasks held are renewed in
a thread while a task runs, short tasks are leased a few at a time, and a stop (asked for, or
Ctrl-C) gives back the tasks not started.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from taskfleet.api.marking import run_call
from taskfleet.queues import Message, Queue
from taskfleet.redact import redact
from taskfleet.worker.attempts import NOT_RETRYABLE, Attempts

log = logging.getLogger("taskfleet.api")

#: Longest wait of an idle `poll` between looks at the queue (a receive that waits this long
#: returns at once when a task arrives on backends that can wait; the others look again).
POLL_WAIT_CAP = 20.0
#: Most tasks one `poll` leases at once when tasks are short (one at a time when they are not).
POLL_BATCH_MAX = 16
#: A task shorter than this lets `poll` lease the next ones in a batch.
SHORT_TASK_SECONDS = 0.05


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


class Poll:
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
