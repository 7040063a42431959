"""The one shape every queue backend has: `Queue`, the values it passes, and its URL rules.

The worker runtime, the CLI and the monitor talk only to `Queue`; the backend is chosen by the
URL scheme (see `taskfleet.queues.open_queue`). Delivery is at least once: a message leased by
`receive` is invisible to other consumers until its lease expires, and becomes visible again if
the consumer dies. Each delivery counts one attempt; when a queue's `max_attempts` are spent the
task moves to the dead letters with its last error, where `redrive` can put it back.

A backend is a subclass of `Queue` that declares, as class attributes, its URL schemes, the
extra that provides its library, an example URL and its capabilities, and implements the
primitives. It decides nothing about policy: when it dead-letters a task by itself (an expired
lease on the task's last attempt) it reports the task, and the runtime writes the event. What
every backend used to repeat lives here: reading the URL (its name, `max_attempts` and options,
with errors that name the URL and the options it takes), the name rules, `from_url`,
`event_queue_url`, the context manager, a `repr` without the password, and one clear error for
an operation a backend cannot do. Subclasses register themselves by scheme as they are defined;
`taskfleet.queues.registry` imports the backend modules when a URL needs them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from taskfleet.errors import MissingExtraError, QueueURLError, TaskFileError, TaskfleetError
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.tasks.readers import DuplicateTracker

if TYPE_CHECKING:
    from taskfleet.tasks.batches import TaskBatch

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_QUEUE_NAME = "tasks"

QueueT = TypeVar("QueueT", bound="Queue")


@dataclass(frozen=True, slots=True)
class Message:
    """One leased delivery of a task.

    `receipt` is the backend's handle for this delivery (an SQS receipt handle, a Redis stream
    entry id, a SQLite row and lease token); `attempt` counts deliveries, starting at 1.
    `dependency_results` is, for a task that waited for others (`Task.after`), what each of
    them returned (id -> result; None for one whose result the queue no longer has), and None
    for a task that waited for nothing: the worker hands it to the task as
    `worker_data.dependency_results`.
    """

    task: Task
    receipt: str
    attempt: int
    dependency_results: Mapping[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.task.id


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of a queue's tasks by state.

    `approximate` is True for backends whose counts are estimates (SQS). `waiting` counts the
    tasks held until their dependencies complete (`Task.after`), and `blocked` those of them
    that wait, directly or through others, for a dead letter: they run only after it is
    redriven; both are None where the queue keeps no dependency state. Counts a
    backend cannot know are None (SQS does not remember completed tasks, for instance; a
    backend that does not declare `Queue.counts_tasks` gives None for visible, leased and
    delayed, and so for `remaining`): a reader shows "unknown" and decides nothing on it.
    """

    visible: int | None
    leased: int | None
    delayed: int | None
    dead: int
    inserted: int | None = None
    completed: int | None = None
    duplicates_skipped: int | None = None
    approximate: bool = False
    waiting: int | None = None
    blocked: int | None = None

    @property
    def remaining(self) -> int | None:
        """Tasks that will still run without anyone's help: not completed, dead-lettered or
        blocked behind a dead letter (waiting tasks that are not blocked count: a dependency
        of theirs is queued or running); None when the backend cannot count them."""
        if self.visible is None or self.leased is None or self.delayed is None:
            return None
        return self.visible + self.leased + self.delayed + (self.waiting or 0) - (self.blocked or 0)

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
            "waiting": self.waiting,
            "blocked": self.blocked,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task whose attempts were spent (or that failed without retry), with its last error."""

    task: Task
    attempts: int
    error: str | None = None


def expired_lease_error(attempts: int, max_attempts: int) -> str:
    """The error of a task dead-lettered because its lease expired on its last attempt."""
    return f"lease expired on attempt {attempts} of {max_attempts} (the worker died or was killed)"


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
class DataChanges:
    """Tasks already present whose data the load's file changed, by what became of them
    (`Queue.send_updates`)."""

    #: not finished (waiting or leased): they run with the new data
    updated: int = 0
    #: dead letters: they hold the new data, for `redrive`
    dead_updated: int = 0
    #: completed: left as they were, unless the load reruns them
    completed_changed: int = 0
    completed_examples: list[str] = field(default_factory=list)
    #: completed or dead-lettered, queued again with the new data
    rerun: int = 0
    #: completed, on a queue that keeps no data of completed tasks (Redis, memory): not
    #: compared, left as they were
    completed_unknown: int = 0
    #: not dead letters, on a queue that cannot read or change the tasks it holds (SQS,
    #: Pub/Sub): neither compared nor sent, so a load with updates sends nothing new there
    not_sent: int = 0

    @property
    def any(self) -> bool:
        return bool(self.updated or self.dead_updated or self.completed_changed or self.rerun)


@dataclass(slots=True)
class SendResult:
    """What `send` did: how many tasks were inserted and how many were already present."""

    inserted: int = 0
    already_present: int = 0
    ids_seen: int = field(default=0)
    changes: DataChanges = field(default_factory=DataChanges)

    def __iadd__(self, other: SendResult) -> SendResult:
        self.inserted += other.inserted
        self.already_present += other.already_present
        self.ids_seen += other.ids_seen
        return self


class SendInterrupted(TaskfleetError):
    """A send stopped part way: `inserted` tasks went into the queue before `cause` was raised.

    The contract for backends whose `send` is not one transaction (Redis, SQS): when
    the task iterable raises (a bad entry in the task file) or the service fails after some
    batches went out, catch the exception and `raise SendInterrupted(inserted=..., cause=exc)
    from exc`, with `inserted` the tasks the queue confirmed (exact for a failing iterable: the
    batch being gathered had not gone out). `taskfleet load-queue` then tells the user exactly
    how many tasks are in the queue; loading again after the fix skips them, as inserts are
    idempotent. A backend whose send is one transaction (SQLite) rolls back instead, raises
    the cause unchanged and declares `atomic_send = True`.
    """

    def __init__(self, inserted: int, cause: BaseException, already_present: int = 0) -> None:
        super().__init__(f"{cause} ({inserted:,} tasks were inserted before the error)")
        self.inserted = inserted
        self.already_present = already_present
        self.cause = cause


class UnsupportedOperationError(TaskfleetError):
    """The queue's backend cannot do what was asked (the message says what to do instead)."""


class QueueNotFoundError(TaskfleetError):
    """A command that only reads or changes an existing queue was given one that does not
    exist (a mistyped path must not become a new, empty queue that answers "0 tasks")."""


#: How many existing names a `QueueNotFoundError` suggests, and how alike they must be.
SUGGESTIONS = 3
SUGGESTION_CUTOFF = 0.6


#: What a `QueueNotFoundError` says creates a queue.
ONLY_LOADING_CREATES = "only loading creates a queue: taskfleet load-queue"


def queue_not_found(
    missing: str, name: str, existing: Iterable[str], creates: str | None = ONLY_LOADING_CREATES
) -> QueueNotFoundError:
    """The one-line error for a queue that does not exist: `missing` says which (its URL
    redacted by the caller), followed by the existing names nearest to `name`, if any, and
    what creates a queue."""
    import difflib  # here: only an error needs it, and every queue's opening imports this

    near = difflib.get_close_matches(
        name, sorted(set(existing) - {name}), n=SUGGESTIONS, cutoff=SUGGESTION_CUTOFF
    )
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    return QueueNotFoundError(f"{missing}{hint}" + (f" ({creates})" if creates else ""))


def parse_max_attempts(value: str, url: str) -> int:
    """The `max_attempts=` option of a queue URL, with an error that names the URL."""
    try:
        number = int(value)
    except ValueError:
        raise QueueURLError(f"{redact(url)!r}: max_attempts must be a whole number") from None
    if number < 1:
        raise QueueURLError(f"{redact(url)!r}: max_attempts must be at least 1, not {number}")
    return number


def attempts_for_new_queue(max_attempts: int | None) -> int:
    """The `max_attempts` a queue is created with: the one asked for, or the default."""
    if max_attempts is not None and max_attempts < 1:
        raise QueueURLError(f"max_attempts must be at least 1, not {max_attempts}")
    return max_attempts or DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True, slots=True)
class QueueAddress:
    """A queue URL taken apart: where the queue is, its name, and the options it was given.

    `options` are the backend's own options (for SQS `region` and `endpoint_url`; for Redis
    whatever goes to redis-py), without `name` and `max_attempts`. `url` is the URL as given:
    it may hold a password, so it is shown only through `redact`.
    """

    url: str
    parts: SplitResult
    name: str
    max_attempts: int | None
    options: dict[str, str]


# scheme -> the backend class that serves it; filled as backend classes are defined.
_BACKENDS: dict[str, type[Queue]] = {}


def registered_backends() -> dict[str, type[Queue]]:
    """The backend classes defined so far, by scheme (see `taskfleet.queues.registry`)."""
    return dict(_BACKENDS)


class Queue:
    """The queue protocol, and the base class of every backend.

    Every method below is a primitive that a backend implements without deciding any policy;
    batch methods take sequences so that no backend does per-message round trips. The class
    attributes declare what the backend is and what it can do; callers read them instead of
    probing for methods, and the operations a backend cannot do raise
    `UnsupportedOperationError` here, naming the scheme and what to do instead.
    """

    # -- what the backend is ------------------------------------------------------------------

    #: URL schemes this backend serves (the first one names it in messages).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The pip extra that installs its library (`pip install 'taskfleet[EXTRA]'`), and the
    #: library's import name; None for a backend that needs nothing beyond taskfleet.
    extra: ClassVar[str | None] = None
    library: ClassVar[str | None] = None
    #: A URL that shows the shape of this backend's URLs, for help texts and errors.
    example_url: ClassVar[str] = ""
    #: Where the queue's name is: the `name=` option (True), or the URL's host and path.
    name_in_query: ClassVar[bool] = True
    #: The backend's own URL options, besides `name` and `max_attempts`.
    url_options: ClassVar[tuple[str, ...]] = ()
    #: Other options pass through to the backend's client library instead of being refused.
    passes_other_options: ClassVar[bool] = False
    #: A path without a scheme that ends with one of these names a queue of this backend.
    bare_path_suffixes: ClassVar[tuple[str, ...]] = ()
    #: What a queue name may hold, and the rule in words for the error.
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    name_rule: ClassVar[str] = "may hold only letters, digits, '_', '-' and '.'"

    # -- what the backend can do (declared, never probed) -------------------------------------

    #: `stats` counts every state exactly and keeps totals of inserted and completed tasks.
    exact_counts: ClassVar[bool] = False
    #: `stats` counts the tasks waiting and leased (exactly or approximately); without it
    #: visible, leased, delayed and remaining are None (unknown), never a made-up 0.
    counts_tasks: ClassVar[bool] = True
    #: `send` skips an id the queue already holds in any state, and counts it.
    idempotent_send: ClassVar[bool] = False
    #: `send` is one transaction: a failing task iterable inserts nothing and its error is
    #: raised unchanged (otherwise `send` raises `SendInterrupted` with the count inserted).
    atomic_send: ClassVar[bool] = False
    #: `send_batches` is a native bulk path that also finds ids repeated within the load
    #: (otherwise the base implementation feeds `send`).
    bulk_load: ClassVar[bool] = False
    #: Leases can be listed and settled by task id (`leased_ids`, `ack_ids`, `release_all`):
    #: what `taskfleet release-all` and the resumable local run need.
    lists_leases: ClassVar[bool] = False
    #: `retry` can hide a task for a delay before it is visible again.
    delayed_retry: ClassVar[bool] = False
    #: Dead letters are kept with their last error (`dead_letters`, `redrive`).
    dead_letter_store: ClassVar[bool] = False
    #: `receive` reports the tasks it dead-letters because their lease expired on their last
    #: attempt (`Received.dead_lettered`).
    reports_expired_dead_letters: ClassVar[bool] = False
    #: Other processes (and, for a server, other hosts) see the same queue; False for a queue
    #: that lives inside one Python process.
    shared_between_processes: ClassVar[bool] = True
    #: The longest lease the backend can hold (None: no limit below what a worker asks); the
    #: runtime renews leases within it.
    max_lease_seconds: ClassVar[float | None] = None
    #: A load can give tasks already present the data its file has now (`send_updates`).
    updates_data: ClassVar[bool] = False
    #: The queue keeps tasks that wait for others (`Task.after`) until the last of them is
    #: acknowledged, then makes them visible, atomically and exactly once however many
    #: consumers ack; it keeps the results of tasks that others wait for (given to `ack`) and
    #: hands them out in `Message.dependency_results`; `dependents` names the tasks a dead
    #: letter blocks, and `stats` counts `waiting` and `blocked`. A backend without it refuses
    #: a task that waits (`refuse_waiting_tasks`): for SQS and Pub/Sub the flow coordinator
    #: (`taskfleet flow run`) holds that state and sends each task when it may run.
    tracks_dependencies: ClassVar[bool] = False
    #: The queue can tell when each named consumer last spoke to it (`set_consumer`,
    #: `consumer_activity`): the pool's manager then knows a machine is alive from its queue
    #: traffic, not only from its events, and replaces one silent on both.
    reports_consumer_activity: ClassVar[bool] = False

    # -- every instance has --------------------------------------------------------------------

    url: str
    name: str
    max_attempts: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("schemes", ())
        if declared and urlsplit(cls.example_url).scheme not in declared:
            raise TypeError(f"{cls.__qualname__}.example_url must use one of its schemes")
        for scheme in declared:
            existing = _BACKENDS.get(scheme)
            # The same class defined again (its module reloaded) replaces itself.
            if existing is not None and _full_name(existing) != _full_name(cls):
                raise TypeError(
                    f"the scheme {scheme}:// is served by {existing.__qualname__} already"
                )
            _BACKENDS[scheme] = cls

    # -- URLs ----------------------------------------------------------------------------------

    @classmethod
    def split_url(cls, url: str) -> SplitResult:
        """The URL's parts; a backend that accepts something other than a URL converts it."""
        return urlsplit(url)

    @classmethod
    def parse_url(cls, url: str) -> QueueAddress:
        """Take a queue URL apart, refusing unknown options and names that break the rules."""
        try:
            parts = cls.split_url(url)
        except ValueError as exc:  # urlsplit: an unbalanced '[' or ']' in the host part
            raise QueueURLError(f"{redact(url)!r}: {exc}") from None
        if parts.scheme not in cls.schemes:
            raise QueueURLError(f"{redact(url)!r} is not a {cls._scheme_words()} URL")
        name = DEFAULT_QUEUE_NAME
        max_attempts: int | None = None
        options: dict[str, str] = {}
        unknown: list[str] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "max_attempts":
                max_attempts = parse_max_attempts(value, url)
            elif key == "name" and cls.name_in_query:
                name = value
            elif key in cls.url_options or cls.passes_other_options:
                options[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise QueueURLError(
                f"{redact(url)!r}: unknown option(s) {', '.join(unknown)}; {cls._options_words()}"
            )
        if not cls.name_in_query:
            name = parts.netloc + parts.path.rstrip("/")
        cls.check_name(name, url)
        return QueueAddress(url, parts, name, max_attempts, options)

    @classmethod
    def check_name(cls, name: str, url: str) -> None:
        """Refuse a queue name that breaks this backend's rules, naming the URL."""
        if not cls.name_pattern.match(name):
            raise QueueURLError(f"{redact(url)!r}: queue name {name!r} {cls.name_rule}")

    @classmethod
    def url_for(cls, address: QueueAddress, name: str) -> str:
        """The URL of the queue `name` in the same place, with the same options, without
        `max_attempts` (it belongs to the queue it was given for)."""
        options = list(address.options.items())
        if cls.name_in_query:
            query = urlencode([("name", name), *options])
            return urlunsplit(address.parts._replace(query=query))
        return urlunsplit(address.parts._replace(netloc=name, path="", query=urlencode(options)))

    @classmethod
    def event_queue_name(cls, name: str) -> str:
        """The name of the companion event queue of the task queue `name`."""
        return f"{name}-events"

    @classmethod
    def event_queue_url(cls, url: str) -> str:
        """The URL of the companion event queue of a task queue (`job` -> `job-events`)."""
        address = cls.parse_url(url)
        return cls.url_for(address, cls.event_queue_name(address.name))

    @classmethod
    def _scheme_words(cls) -> str:
        return " or ".join(f"{scheme}://" for scheme in cls.schemes)

    @classmethod
    def _options_words(cls) -> str:
        taken = [*(["name"] if cls.name_in_query else []), *cls.url_options, "max_attempts"]
        listed = [f"{option}=" for option in taken]
        words = ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]
        return f"a {cls.schemes[0]}:// queue URL takes {words}"

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def import_library(cls) -> ModuleType | None:
        """The backend's library, imported now; a missing one is an error that says which
        extra to install."""
        if cls.library is None:
            return None
        try:
            return importlib.import_module(cls.library)
        except ImportError:
            scheme = cls.schemes[0] if cls.schemes else cls.__name__
            raise MissingExtraError(
                f"The {scheme}:// queue", cls.extra or scheme, cls.library
            ) from None

    @classmethod
    def from_url(
        cls: type[QueueT], url: str, *, max_attempts: int | None = None, create: bool = True
    ) -> QueueT:
        """Open the queue named by `url`.

        With `create` (what loading does) a queue that does not exist is created, with
        `max_attempts` (before the URL's own `max_attempts=`); an existing queue keeps its own.
        Without it a queue that does not exist is a `QueueNotFoundError` that names it and the
        nearest existing names where the backend can list them, and opening writes nothing:
        what a backend still needs (its scripts, its markers) it writes on its first change.
        """
        address = cls.parse_url(url)
        attempts = max_attempts if max_attempts is not None else address.max_attempts
        return cls.from_address(address, attempts, create=create)

    @classmethod
    def from_address(
        cls: type[QueueT], address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> QueueT:
        """Open the queue of a parsed URL (what `from_url` calls once the URL is checked)."""
        raise NotImplementedError

    # -- the protocol: primitives every backend implements ----------------------------------------

    def send(self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = 0) -> SendResult:
        """Insert tasks (`Task`s, or plain dicts `{"id": ..., "data": {...}}`, checked as a
        task file's entries are), consuming the iterable lazily (it may hold millions).

        `batch_size` (0: the backend's own) is how many go in one call to the service. An id
        already present (queued, leased, done or dead) is skipped and counted where the
        backend can tell (`idempotent_send`). If the iterable or the service fails part way,
        see `SendInterrupted` and `atomic_send`.
        """
        raise NotImplementedError

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        """Lease up to `max_messages` visible tasks for `lease_seconds` each, counting one
        attempt for each; wait up to `wait_seconds` for the first one.

        An expired lease makes its task visible again, with the next attempt; when that lease
        was the task's last attempt, the task goes to the dead letters instead, and is
        reported in `Received.dead_lettered` (exactly once, by the receive that moved it). A
        receive that moved some returns at once, even with nothing leased.
        """
        raise NotImplementedError

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        """The tasks are done: remove them for good. Accepted even when a lease has since
        passed to another consumer (the work is done; that consumer's ack changes nothing).

        `results` (task id -> what the task returned) is given by a runtime whose queue
        `tracks_dependencies`: the queue keeps the result of each task that others wait for,
        and a task whose last dependency this ack completes becomes visible, in the same
        atomic step. Acking a task already done releases nothing a second time.
        """
        raise NotImplementedError

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        """Make the task visible again after `delay_seconds`, or dead-letter it with `error`
        when its attempts are spent. Returns True if it will be retried (or the lease had
        passed on: nothing to do), False if it was dead-lettered."""
        raise NotImplementedError

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        """Move the task to the dead letters now with `error` (it must not be retried)."""
        raise NotImplementedError

    def release(self, messages: Sequence[Message]) -> None:
        """Give messages back at once, without counting the attempt (shutdown, prefetch)."""
        raise NotImplementedError

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        """Renew the leases of running tasks to `lease_seconds` from now."""
        raise NotImplementedError

    def stats(self) -> QueueStats:
        """Counts of the queue's tasks by state (see `exact_counts`)."""
        raise NotImplementedError

    def dead_letters(self) -> Iterator[DeadLetter]:
        """The dead letters with their attempts and last error (see `dead_letter_store`)."""
        raise self._keeps_no_dead_letters()

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters (all, or the given ids) back in the queue with fresh attempts;
        returns how many moved (see `dead_letter_store`)."""
        raise self._keeps_no_dead_letters()

    def purge(self) -> None:
        """Delete every task, dead letter and counter of this queue (its max_attempts stays)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and threads. The queue itself stays."""
        raise NotImplementedError

    # -- with a default: the bulk load, and what only some backends can do ----------------------

    def send_batches(self, batches: Iterable[TaskBatch]) -> SendResult:
        """Load validated batches (see `taskfleet.tasks.batches`), the bulk path of a load.

        The reader leaves ids repeated within the load to this method, which names the line of
        the second one. This implementation finds them itself and feeds `send`, so a load
        inserts and fails exactly as `send` does; a backend with a native bulk path overrides
        it and declares `bulk_load`.
        """
        return self.send(tasks_of(batches))

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """`send_batches`, and tasks already present whose data differs from the batches' take
        the new data, unless completed: those are counted (`SendResult.changes`), and queued
        again with the new data if `rerun_completed` (dead letters too). See `updates_data`.

        What each state gets, on every backend that declares `updates_data`: waiting and
        delayed tasks run with the new data; a leased task's current attempt keeps the data it
        was given (a running task cannot be changed under it) and any later attempt gets the
        new data; dead letters hold the new data, still dead, for `redrive`. A queue that keeps
        no data of completed tasks leaves them alone uncompared (`completed_unknown`); one that
        cannot read the tasks it holds (SQS, Pub/Sub) replaces only its dead letters and sends
        nothing else (`not_sent`), since it cannot tell a new task from one it holds.
        """
        raise TaskfleetError(
            f"{redact(self.url)}: this kind of queue cannot give tasks already loaded new data; "
            "load the changed tasks under new ids, or into a new queue"
        )

    def leased_ids(self) -> list[str]:
        """Ids of the tasks currently leased, live or expired (see `lists_leases`)."""
        raise self._cannot_list_leases()

    def ack_ids(self, ids: Iterable[str], results: Mapping[str, Any] | None = None) -> int:
        """Mark leased or waiting tasks done by id; returns how many (see `lists_leases`).
        `results` as for `ack` (a resumed run reads them from its event log)."""
        raise self._cannot_list_leases()

    def release_all(self) -> int:
        """Give back every leased task at once, without counting the attempt; returns how
        many. Only when no consumer can be holding a lease (see `lists_leases`)."""
        raise self._cannot_list_leases()

    def dependents(self, task_ids: Iterable[str]) -> list[str]:
        """The tasks that wait, directly or through others, for any of `task_ids` and are not
        done: those a dead letter blocks (see `tracks_dependencies`; empty where the queue
        keeps no dependency state)."""
        return []

    def set_consumer(self, name: str) -> None:
        """Name the consumer this queue object serves (a worker gives its machine's name, the
        one its events carry), so that `consumer_activity` can report it. A backend that
        does not report activity ignores it."""

    def consumer_activity(self) -> dict[str, float]:
        """Each named consumer's latest activity on this queue (seconds since the epoch, this
        machine's clock), for the consumers the queue still knows of."""
        raise self.unsupported(
            "report its consumers' activity", "the pool watches the job's events instead"
        )

    def refuse_waiting_tasks(self, tasks: Iterable[Task]) -> Iterator[Task]:
        """`tasks`, unchanged, raising at the first one that waits for others when this queue
        keeps no dependency state: a backend's `send` passes its tasks through this, so that
        a waiting task is never queued as if it could run now."""
        if self.tracks_dependencies:
            yield from tasks
            return
        for task in tasks:
            if task.after:
                raise self.unsupported(
                    f"hold task {task.id!r} until the tasks it waits for ('after') complete",
                    "run the flow with `taskfleet flow run --queue URL --task-file FILE`, "
                    "which sends each task when the tasks it waits for have completed",
                )
            yield task

    def load_note(self) -> str | None:
        """What a load's counts mean where the service does not say which tasks it already
        held (see `idempotent_send`); None where the counts are the queue's own."""
        return None

    def unsupported(self, what: str, instead: str) -> UnsupportedOperationError:
        """The error for an operation this backend cannot do: its scheme, and what to do."""
        scheme = urlsplit(self.url).scheme or self.schemes[0]
        return UnsupportedOperationError(f"a {scheme}:// queue cannot {what}; {instead}")

    def _keeps_no_dead_letters(self) -> UnsupportedOperationError:
        return self.unsupported(
            "keep dead letters",
            "the task_dead_lettered events of the run's event log name the tasks to load again",
        )

    def _cannot_list_leases(self) -> UnsupportedOperationError:
        return self.unsupported(
            "list its leased tasks",
            "leased tasks become visible again by themselves when their leases expire "
            "(the worker's --lease-seconds)",
        )

    # -- every backend alike ------------------------------------------------------------------

    def __enter__(self: QueueT) -> QueueT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def tasks_of(batches: Iterable[TaskBatch]) -> Iterator[Task]:
    """The tasks of validated batches, refusing an id repeated within them."""
    seen = DuplicateTracker()
    for batch in batches:
        # a batch made of Tasks carries them: not decoded from their JSON again
        tasks = batch.tasks or map(Task.from_json, batch.bodies)
        for index, (task_id, task) in enumerate(zip(batch.ids, tasks, strict=True)):
            if seen.is_duplicate(task_id):
                raise TaskFileError(
                    f"{batch.where(index)}: duplicate id {task_id!r}; each task id must be "
                    "unique within a task file."
                )
            yield task
