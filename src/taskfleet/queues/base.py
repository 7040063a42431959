"""The one queue protocol that every backend speaks.

The worker runtime, the CLI and the monitor talk only to `Queue`; the backend is chosen by the
URL scheme (see `taskfleet.queues.open_queue`). Delivery is at least once: a message leased by
`receive` is invisible to other consumers until its lease expires, and becomes visible again if
the consumer dies. Each delivery counts one attempt; when a queue's `max_attempts` are spent the
task moves to the dead letters with its last error, where `redrive` can put it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from taskfleet.errors import TaskfleetError
from taskfleet.tasks import Task

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Message:
    """One leased delivery of a task.

    `receipt` is the backend's handle for this delivery (an SQS receipt handle, a Redis stream
    entry id, a SQLite row and lease token); `attempt` counts deliveries, starting at 1.
    """

    task: Task
    receipt: str
    attempt: int

    @property
    def task_id(self) -> str:
        return self.task.id


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of a queue's tasks by state.

    `approximate` is True for backends whose counts are estimates (SQS, Pub/Sub). Counts a
    backend cannot know are None (SQS does not remember completed tasks, for instance).
    """

    visible: int
    leased: int
    delayed: int
    dead: int
    inserted: int | None = None
    completed: int | None = None
    duplicates_skipped: int | None = None
    approximate: bool = False

    @property
    def remaining(self) -> int:
        """Tasks not yet completed or dead-lettered."""
        return self.visible + self.leased + self.delayed

    def as_dict(self) -> dict[str, Any]:
        return {
            "visible": self.visible,
            "leased": self.leased,
            "delayed": self.delayed,
            "dead": self.dead,
            "inserted": self.inserted,
            "completed": self.completed,
            "duplicates_skipped": self.duplicates_skipped,
            "remaining": self.remaining,
            "approximate": self.approximate,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task whose attempts were spent (or that failed without retry), with its last error."""

    task: Task
    attempts: int
    error: str | None = None


class Received(list[Message]):
    """What `receive` returns: the messages it leased, and the tasks it dead-lettered itself.

    A backend that finds an expired lease whose attempts are spent (the worker died on the
    task's last attempt) moves that task to the dead letters instead of leasing it again, and
    reports it here: the backend decides nothing more, the runtime's attempt owner writes the
    `task_dead_lettered` event and counts it. It is a list of the leased messages, so callers
    that only lease iterate it as one.
    """

    __slots__ = ("dead_lettered",)

    def __init__(
        self, messages: Iterable[Message] = (), dead_lettered: Iterable[DeadLetter] = ()
    ) -> None:
        super().__init__(messages)
        self.dead_lettered: list[DeadLetter] = list(dead_lettered)


@dataclass(slots=True)
class SendResult:
    """What `send` did: how many tasks were inserted and how many were already present."""

    inserted: int = 0
    already_present: int = 0
    ids_seen: int = field(default=0)

    def __iadd__(self, other: SendResult) -> SendResult:
        self.inserted += other.inserted
        self.already_present += other.already_present
        self.ids_seen += other.ids_seen
        return self


class SendInterrupted(TaskfleetError):
    """A send stopped part way: `inserted` tasks went into the queue before `cause` was raised.

    The contract for backends whose `send` is not one transaction (Redis, SQS, Pub/Sub): when
    the task iterable raises (a bad entry in the task file) or the service fails after some
    batches went out, catch the exception and `raise SendInterrupted(inserted=..., cause=exc)
    from exc`, with `inserted` the tasks the queue confirmed (exact for a failing iterable: the
    batch being gathered had not gone out). `taskfleet load-queue` then tells the user exactly
    how many tasks are in the queue; loading again after the fix skips them, as inserts are
    idempotent. A backend whose send is one transaction (SQLite) rolls back instead, raises
    the cause unchanged and sets the class attribute `atomic_send = True`.
    """

    def __init__(self, inserted: int, cause: BaseException, already_present: int = 0) -> None:
        super().__init__(f"{cause} ({inserted:,} tasks were inserted before the error)")
        self.inserted = inserted
        self.already_present = already_present
        self.cause = cause


def url_max_attempts(value: str, url: str) -> int:
    """The `max_attempts=` option of a queue URL, with an error that names the URL."""
    from taskfleet.errors import QueueURLError
    from taskfleet.redact import redact

    try:
        return int(value)
    except ValueError:
        raise QueueURLError(f"{redact(url)!r}: max_attempts must be a whole number") from None


@runtime_checkable
class Queue(Protocol):
    """The protocol. Batch methods take sequences so that no backend does per-message trips."""

    url: str
    max_attempts: int

    def send(self, tasks: Iterable[Task], batch_size: int = ...) -> SendResult:
        """Insert tasks; an id already queued, leased, done or dead is skipped and counted."""
        ...

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        """Lease up to `max_messages` visible tasks for `lease_seconds`; report the tasks whose
        expired lease was their last attempt, which it dead-lettered instead."""
        ...

    def ack(self, messages: Sequence[Message]) -> None:
        """The tasks are done: remove them for good."""
        ...

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        """Make the task visible again after `delay_seconds`, or dead-letter it when its
        attempts are spent. Returns True if it will be retried, False if it was dead-lettered."""
        ...

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        """Move the task to the dead letters now (it failed and must not be retried)."""
        ...

    def release(self, messages: Sequence[Message]) -> None:
        """Give messages back at once, without counting the attempt (shutdown, prefetch)."""
        ...

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        """Renew the leases of running tasks to `lease_seconds` from now."""
        ...

    def stats(self) -> QueueStats: ...

    def dead_letters(self) -> Iterator[DeadLetter]: ...

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters (all, or the given ids) back in the queue with fresh attempts."""
        ...

    def purge(self) -> None:
        """Delete every task, dead letter and counter of this queue."""
        ...

    def close(self) -> None: ...
