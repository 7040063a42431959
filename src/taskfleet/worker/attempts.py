"""The one owner of an attempt's outcome: what follows it, its events, its queue calls, its counts.

A child reports how an attempt ended (the task returned or raised); the children's keeper
reports what a child cannot (it exited while running the task, or was killed at its deadline).
From there everything about the attempt happens here, in this order:

1. `RetryPolicy` decides what follows: ack, retry after a backoff, or dead letter; the attempt
   waits, with the others that ended since the last batch, to be settled;
2. `settle` builds each attempt's event (stamped as it is written), followed by
   `task_dead_lettered` when the task will not be tried again, flushes the batch's events and
   only then makes the batch's queue calls, so no outcome is ever acked without its record (a
   crash in between runs the task again: delivery is at least once);
3. the run's counts (`RunCounts`) are kept, for the progress view, the summary line and the
   exit code.

On a queue that keeps the dependency state of a flow (`Queue.tracks_dependencies`) an ack
carries the results of the tasks it completes, which the queue hands to their dependents; and
once a task is dead-lettered, each task that waits for it (directly or through others) gets a
`task_blocked` event naming it, and is counted as blocked: it runs only after a redrive.

Backends decide nothing. When a queue dead-letters a task itself, because `receive` found the
task's lease expired on its last attempt (its worker died) or because `retry` counted more
attempts than this runtime knew of, it reports that, and this module writes the
`task_dead_lettered` event and counts it exactly as for the policy's own dead letters.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskfleet._compat import StrEnum
from taskfleet.events.schema import EventType, make_event
from taskfleet.events.sinks import EventSink
from taskfleet.queues.base import DeadLetter, Message, Queue

if TYPE_CHECKING:
    from taskfleet.worker.settings import WorkerSettings

log = logging.getLogger("taskfleet.worker")

SETTLE_INTERVAL = 0.05  # seconds between event batches (and so between queue-call batches)
SETTLE_MAX = 2000  # attempts that force a batch sooner
RETRY_ASKED = "the task asked to be retried"  # the error a dead letter keeps in that case
#: An exception class with this attribute set to True is never retried, whatever the policy
#: says: the attempt would fail the same way again (a queue message that names a function not
#: marked as a task, for one). The child reports it as `"retryable": false`.
NOT_RETRYABLE = "taskfleet_not_retryable"


class Action(StrEnum):
    """What follows an attempt."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Delay before the next attempt: exponential in the attempt, capped, with full jitter.

    Full jitter (uniform between half and all of the exponential delay) keeps many workers that
    failed together from retrying in lockstep, while still guaranteeing a minimum wait so a
    failing task never spins in a hot loop.
    """
    exponential = min(cap, base * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return exponential * (0.5 + 0.5 * r)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Which failed attempts are tried again, how often, and after how long.

    A task that asks to be retried (returns `retry=True`) is retried while attempts remain; an
    exception, an exit or a timeout is retried if the matching `--retry-on-*` option says so and
    attempts remain. Everything else goes to the dead letters, where `taskfleet redrive` can
    bring it back after a fix.
    """

    max_attempts: int
    retry_on_exit: bool
    retry_on_exception: bool
    retry_on_timeout: bool
    backoff_base: float
    backoff_cap: float

    @classmethod
    def from_settings(cls, settings: WorkerSettings, max_attempts: int) -> RetryPolicy:
        """The policy of a run: the worker's options, the queue's `max_attempts`."""
        return cls(
            max_attempts=max_attempts,
            retry_on_exit=settings.retry_on_exit,
            retry_on_exception=settings.retry_on_exception,
            retry_on_timeout=settings.retry_on_timeout,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
        )

    def decide(self, attempt: int, wants_retry: bool) -> Action:
        """After a failed attempt number `attempt` (from 1): retry or dead letter."""
        if wants_retry and attempt < self.max_attempts:
            return Action.RETRY
        return Action.DEAD_LETTER

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after `attempt`."""
        return backoff_delay(attempt, self.backoff_base, self.backoff_cap, rng)


@dataclass
class RunCounts:
    """What happened in this run, for the progress view and the final summary."""

    completed: int = 0
    failed_attempts: int = 0
    retried: int = 0
    dead_lettered: int = 0
    #: tasks that wait for one this run dead-lettered (each reported once by a task_blocked)
    blocked: int = 0
    released: int = 0
    received: int = 0
    by_event: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.completed + self.dead_lettered


# An attempt waiting to be settled: its event type and fields (the event itself is made when
# the batch is written, so that it is stamped then), the message, what follows the attempt, and
# the error a retry or dead letter keeps. A plain tuple: one is made per task.
_Pending = tuple[EventType, dict[str, Any], Message, Action, str | None]
_Settled = tuple[Message, str | None]  # a message to retry or dead-letter, and its error


@dataclass
class _Calls:
    """The queue calls of a batch whose events are in the sink: each list loses what was done,
    so a batch interrupted by an outage is taken up where it stopped, never done twice."""

    acks: list[Message]
    retries: list[_Settled]
    dead_letters: list[_Settled]
    refused: list[_Settled] = field(default_factory=list)  # retries the queue dead-lettered
    #: what the acked tasks returned, for a queue that hands results to dependents
    results: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.acks) + len(self.retries) + len(self.dead_letters) + len(self.refused)

    def messages(self) -> list[Message]:
        """The messages not settled yet (refused ones are dead-lettered already)."""
        return self.acks + [m for m, _ in self.retries] + [m for m, _ in self.dead_letters]


class Attempts:
    """Settles every attempt of a run (see the module docstring for the order of things).

    The outcome methods (`returned`, `raised`, `exited`, `timed_out`) decide what follows and
    keep the attempt pending; `settle` writes the events of the pending batch and carries out
    the decisions; `dead_lettered_by_queue` takes the dead letters a `receive` reports.
    """

    def __init__(
        self,
        queue: Queue,
        sink: EventSink,
        policy: RetryPolicy,
        counts: RunCounts,
        *,
        hostname: str,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = queue
        self.sink = sink
        self.policy = policy
        self.counts = counts
        self.hostname = hostname
        self.rng = rng or random.Random()
        self.last_settled = time.monotonic()
        #: When the last task this run retried with a delay is visible again (monotonic): a
        #: local run on a queue that cannot count is not over before then.
        self.retries_hidden_until = 0.0
        self._pending: list[_Pending] = []
        self._unsettled: _Calls | None = None  # a batch an outage interrupted
        #: tasks dead-lettered whose dependents have not been reported blocked yet
        self._blocking: list[str] = []
        self._reported_blocked: set[str] = set()

    @property
    def pending(self) -> int:
        """Attempts that ended and are not settled yet."""
        return len(self._pending) + (len(self._unsettled) if self._unsettled else 0)

    # -- how an attempt ended ---------------------------------------------------------------

    def returned(self, message: Message, slot: int, pid: int, raw: dict[str, Any]) -> None:
        """The task returned `(retry, result)`: ack it, or retry it if it asked to be."""
        retry = bool(raw["retry"])
        fields = {
            "task_id": message.task.id,
            "attempt": message.attempt,
            "worker_id": slot,
            "pid": pid,
            "elapsed_time": raw["elapsed"],
            "retry": retry,
            "result": raw.get("result"),
            "result_type": raw.get("result_type"),
        }
        if retry:
            action = self.policy.decide(message.attempt, True)
            self._pending.append((EventType.TASK_COMPLETED, fields, message, action, RETRY_ASKED))
        else:
            self._pending.append((EventType.TASK_COMPLETED, fields, message, Action.ACK, None))

    def raised(self, message: Message, slot: int, pid: int, raw: dict[str, Any]) -> None:
        """The task raised (or returned something that is not a JSON `(retry, result)`)."""
        fields = {
            "task_id": message.task.id,
            "attempt": message.attempt,
            "worker_id": slot,
            "pid": pid,
            "elapsed_time": raw["elapsed"],
            "exception": raw["exception"],
            "stack_trace": raw.get("stack_trace") or None,
        }
        wants_retry = self.policy.retry_on_exception and raw.get("retryable", True)
        action = self.policy.decide(message.attempt, wants_retry)
        self._pending.append((EventType.TASK_EXCEPTION, fields, message, action, raw["exception"]))

    def exited(
        self,
        message: Message,
        slot: int,
        pid: int,
        exit_code: int | None,
        elapsed: float,
        *,
        exception: str | None = None,
        stack_trace: str | None = None,
    ) -> None:
        """The child process ended while it ran the task, or the task called `sys.exit()`
        (`exception` then says so: the `SystemExit` it raised)."""
        fields = {
            "task_id": message.task.id,
            "attempt": message.attempt,
            "worker_id": slot,
            "pid": pid,
            "elapsed_time": elapsed,
            "exit_code": exit_code,
            "exception": exception,
            "stack_trace": stack_trace,
        }
        if exception is not None:
            error = f"the task called sys.exit() ({exception}, exit code {exit_code})"
        elif exit_code is not None and exit_code < 0:
            error = f"the task's process was killed by signal {-exit_code}"
        else:
            error = f"the task's process exited with code {exit_code} before returning"
        action = self.policy.decide(message.attempt, self.policy.retry_on_exit)
        self._pending.append((EventType.TASK_EXITED, fields, message, action, error))

    def timed_out(
        self, message: Message, slot: int, pid: int, elapsed: float, max_runtime: float
    ) -> None:
        """The task ran past `--max-runtime` and its child was killed."""
        fields = {
            "task_id": message.task.id,
            "attempt": message.attempt,
            "worker_id": slot,
            "pid": pid,
            "elapsed_time": elapsed,
        }
        error = f"the task ran longer than --max-runtime {max_runtime:g} s and was killed"
        action = self.policy.decide(message.attempt, self.policy.retry_on_timeout)
        self._pending.append((EventType.TASK_TIMED_OUT, fields, message, action, error))

    def undeliverable(self, message: Message, error: str) -> None:
        """The task cannot even be handed to a child (its data cannot be encoded for the pipe:
        a task put in the queue by something that skipped the loader's limits). It would fail
        the same way every time, so it is dead-lettered at once, with the reason."""
        fields = {
            "task_id": message.task.id,
            "attempt": message.attempt,
            "elapsed_time": 0.0,
            "exception": f"the task cannot be sent to a child process ({error}); "
            "see the limits on tasks in the README",
        }
        log.warning("task %s cannot be sent to a child process: %s", message.task.id, error)
        self._pending.append(
            (EventType.TASK_EXCEPTION, fields, message, Action.DEAD_LETTER, fields["exception"])
        )

    # -- what the queue did by itself -------------------------------------------------------

    def dead_lettered_by_queue(self, dead_letters: Sequence[DeadLetter]) -> None:
        """Tasks `receive` dead-lettered (their lease expired on their last attempt): the queue
        has moved them already; write their events now and count them."""
        if not dead_letters:
            return
        for dead in dead_letters:
            self._write_dead_lettered(dead.task.id, dead.attempts, dead.error)
        self.counts.dead_lettered += len(dead_letters)
        self.sink.flush()
        self._blocking.extend(dead.task.id for dead in dead_letters)
        self.report_blocked()
        log.warning(
            "the queue dead-lettered %d task(s) whose lease expired on their last attempt "
            "(a worker died holding them), e.g. %s",
            len(dead_letters),
            dead_letters[0].task.id,
        )

    # -- settling ---------------------------------------------------------------------------

    def seconds_until_due(self, now: float) -> float | None:
        """How long the pending batch may still wait to be settled (None: nothing pending)."""
        if not self._pending:
            return None
        return max(0.0, SETTLE_INTERVAL - (now - self.last_settled))

    def settle_if_due(self, now: float, *, nothing_running: bool = False) -> None:
        """Settle the pending batch once it is old enough or large enough, or at once when no
        task is running (no outcome will come soon to share the batch)."""
        pending = len(self._pending)
        if pending and (
            nothing_running or now - self.last_settled >= SETTLE_INTERVAL or pending >= SETTLE_MAX
        ):
            self.settle()

    def settle(self) -> None:
        """Write the batch's events, then make its queue calls: never ack before the record.

        If the sink or the queue fails (an outage), the error is raised with the batch kept:
        its events stay in the sink's buffer and the calls not made yet wait here; the next
        `settle` writes the events again and makes only those calls, before a new batch."""
        if self._unsettled is None:
            batch, self._pending = self._pending, []
            self._unsettled = self._write_events(batch)
        self.sink.flush()
        self._call_queue(self._unsettled)
        self._unsettled = None
        self.last_settled = time.monotonic()
        self.report_blocked()

    def report_blocked(self) -> None:
        """Write a `task_blocked` event for each task that waits for one dead-lettered since the
        last report (naming that one), and count it. Kept until the queue answers: a failure
        here (an outage) reports them on the next settle."""
        if not self._blocking:
            return
        failed = list(dict.fromkeys(self._blocking))
        reported = self._reported_blocked
        emitted = 0
        for dead_id in failed:
            for task_id in self.queue.dependents([dead_id]):
                if task_id in reported:
                    continue
                reported.add(task_id)
                self.sink.emit(
                    make_event(
                        EventType.TASK_BLOCKED,
                        hostname=self.hostname,
                        task_id=task_id,
                        blocked_by=dead_id,
                    )
                )
                emitted += 1
        self._blocking = []
        if emitted:
            self.counts.blocked += emitted
            self.sink.flush()
            log.warning(
                "%d task(s) wait for a dead-lettered task and will run only after "
                "`taskfleet redrive` of it",
                emitted,
            )

    def abandon(self) -> list[Message]:
        """The run ends without settling what is pending (its service stayed away): forget
        it, and return its messages, to be given back if the queue still answers (unacked,
        they come back anyway when their leases expire)."""
        messages = [message for _, _, message, _, _ in self._pending]
        if self._unsettled is not None:
            messages.extend(self._unsettled.messages())
        self._pending, self._unsettled = [], None
        return messages

    def _write_events(self, batch: list[_Pending]) -> _Calls:
        """Buffer each attempt's event (and `task_dead_lettered` after those that end their
        task); returns the messages to ack, to retry and to dead-letter."""
        counts = self.counts
        by_event = counts.by_event
        emit = self.sink.emit
        hostname = self.hostname
        acks: list[Message] = []
        retries: list[_Settled] = []
        dead_letters: list[_Settled] = []
        results: dict[str, Any] | None = {} if self.queue.tracks_dependencies else None
        for kind, fields, message, action, error in batch:
            emit(make_event(kind, fields, hostname=hostname))
            by_event[kind] = by_event.get(kind, 0) + 1
            if action is Action.ACK:
                acks.append(message)
                if results is not None:
                    results[message.task.id] = fields.get("result")
                continue
            if kind != EventType.TASK_COMPLETED:
                counts.failed_attempts += 1
            if action is Action.RETRY:
                retries.append((message, error))
            else:
                dead_letters.append((message, error))
                self._write_dead_lettered(message.task.id, message.attempt, error)
        return _Calls(acks, retries, dead_letters, results=results)

    def _call_queue(self, calls: _Calls) -> None:
        """Ack, retry after a backoff, dead-letter; a retry the queue refuses (it counted more
        attempts than we knew of, and dead-lettered the task) gets its event here. What was
        done leaves `calls` as it is done (see `_Calls`)."""
        counts = self.counts
        if calls.acks:
            if calls.results is not None:
                self.queue.ack(calls.acks, calls.results)
            else:
                self.queue.ack(calls.acks)
            counts.completed += len(calls.acks)
            calls.acks = []
        done = 0
        try:
            for message, error in calls.retries:
                delay = self.policy.delay(message.attempt, self.rng)
                if self.queue.retry(message, delay, error):
                    counts.retried += 1
                    visible_at = time.monotonic() + delay
                    self.retries_hidden_until = max(self.retries_hidden_until, visible_at)
                else:
                    calls.refused.append((message, error))
                done += 1
        finally:
            del calls.retries[:done]
        done = 0
        try:
            for message, error in calls.dead_letters:
                self.queue.dead_letter(message, error)
                counts.dead_lettered += 1
                self._blocking.append(message.task.id)
                done += 1
        finally:
            del calls.dead_letters[:done]
        if calls.refused:
            refused, calls.refused = calls.refused, []
            for message, error in refused:
                self._write_dead_lettered(message.task.id, message.attempt, error)
                self._blocking.append(message.task.id)
            counts.dead_lettered += len(refused)
            self.sink.flush()

    def _write_dead_lettered(self, task_id: str, attempt: int, error: str | None) -> None:
        self.sink.emit(
            make_event(
                EventType.TASK_DEAD_LETTERED,
                hostname=self.hostname,
                task_id=task_id,
                attempt=attempt,
                exception=error,
            )
        )
