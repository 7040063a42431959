"""The Google Cloud Pub/Sub queue: `pubsub://PROJECT/NAME[?max_attempts=N&endpoint=HOST:PORT]`.

Pub/Sub is a topic with subscriptions rather than a queue, so a taskfleet queue is four
resources: the topic `NAME` that tasks are published to, the subscription `NAME-sub` that
workers pull from, and the dead-letter topic `NAME-dead` with its subscription `NAME-dead-sub`
that keeps dead letters (`?topic=` and `?subscription=` name a topic and subscription the user
made; the dead-letter pair is then named after the subscription). Opening creates what is
missing. The subscription gets a dead-letter policy to `NAME-dead` and the label
`taskfleet-max-attempts`; an existing subscription keeps its own.

Leases. `receive` pulls, then sets the lease asked for (a deadline change) unless it is the
subscription's ack deadline. Until that call the messages of a pull are out for the
subscription's deadline, and a worker killed in between (a host that vanishes) never makes
it: Pub/Sub delivers them again only when that deadline passes. So the subscription is
created with Pub/Sub's shortest ack deadline, 10 s, not the runtime's default lease (60 s
would save the deadline change of a pull at that lease, but hide such messages for a minute,
longer than the other workers may wait before they exit idle). A subscription made before
keeps its own deadline (`gcloud pubsub subscriptions update NAME-sub --ack-deadline=10`
shortens it).

Attempts. Pub/Sub numbers deliveries (`delivery_attempt`) only on a subscription with a
dead-letter policy, whose `max_delivery_attempts` must be 5 to 100. So taskfleet counts
attempts itself against its own `max_attempts`, from two numbers: the attribute
`taskfleet_attempts` (attempts spent before this copy of the task was published: 0 for a
loaded task) plus the delivery number of this copy (`delivery_attempt`, or 1 on a subscription
without a dead-letter policy, such as one the user made). The policy's
`max_delivery_attempts` is set a few deliveries above `max_attempts` (5 at least), so that
Pub/Sub's own dead-lettering is only the backstop: `receive` moves a copy delivered for
attempt `max_attempts + 1` (its last lease expired) to `NAME-dead` itself and reports it.
Without delivery numbers an expired lease is not counted (the task comes back with the same
attempt); a retry always is, because it then publishes a new copy with the attempt in its
attribute and acknowledges the old one.

Delays. Pub/Sub has no delayed delivery. A retry with a delay of at most 600 seconds (the
longest ack deadline) on a subscription with delivery numbers is `modify_ack_deadline(delay)`
on the leased message: Pub/Sub delivers it again when the delay is over, one delivery later.
Any other delayed retry publishes a copy carrying its due time (`taskfleet_not_before`);
`receive` hides a copy that is not due yet for the time left (600 seconds at a time) instead
of leasing it, and, on a subscription with delivery numbers, republishes a due copy without its
due time before leasing it, so the hidden deliveries count no attempt.

What Pub/Sub cannot do, and what we do instead (the contract suite lists these in one place):
- No idempotent send: loading twice publishes twice (`already_present` is always 0).
- No counts in the Pub/Sub API (`counts_tasks` is False): `stats` counts the dead letters
  (reading their subscription) and reports visible, leased and delayed as None, unknown, never
  as 0 (Cloud Monitoring's `subscription/num_undelivered_messages` has the backlog, a minute
  or more late). The pool takes what remains from the job's events instead (docs/pool.md).
- An earlier ack id of a message is honoured: a late acknowledgement settles the task (the
  work is done), but a stale release, retry or extend changes the current delivery.
- A release on a subscription with delivery numbers publishes a copy (so that it counts no
  attempt) and acknowledges the delivery.
- Leases are whole seconds, at most 600 (`max_lease_seconds`: a worker asking for more holds
  leases of 600 s and renews them within that).

`?exactly_once=true` creates the subscription with exactly-once delivery; acknowledgements
and deadline changes are then checked id by id: an ack id Pub/Sub no longer honours (its lease
passed on) is skipped, transient failures are tried again. Every call is batched: Publish of
up to 1,000 messages (and under 10 MB) with many publishes in flight, Pull of up to 1,000,
Acknowledge and ModifyAckDeadline of up to 1,000 ack ids. Credentials come from Google's
default chain; `endpoint=` (or `PUBSUB_EMULATOR_HOST`, as the client library reads it) points
at an emulator, reached without credentials.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode, urlunsplit

from taskfleet.errors import (
    MessageTooLargeError,
    QueueConnectionError,
    QueueUnavailableError,
    QueueURLError,
)
from taskfleet.queues.base import (
    DeadLetter,
    Message,
    Queue,
    QueueAddress,
    QueueNotFoundError,
    QueueStats,
    Received,
    SendResult,
    attempts_for_new_queue,
    expired_lease_error,
    queue_not_found,
    tasks_of,
)
from taskfleet.queues.in_flight import Calls
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.tasks.model import as_tasks

if TYPE_CHECKING:
    from taskfleet.tasks.batches import TaskBatch

log = logging.getLogger(__name__)

# A pull that must not wait still needs `return_immediately` (a pull without it may be held
# by the service); the client library warns about it on every call.
warnings.filterwarnings(
    "ignore", message="The return_immediately flag is deprecated", category=DeprecationWarning
)

MAX_MESSAGE_BYTES = 10 * 1000 * 1000  # one message, data and attributes
MAX_REQUEST_BYTES = 9 * 1000 * 1000  # one Publish request, with room for its framing
ATTRIBUTE_ROOM = 2048  # what the attributes of a message may take beside its data
BATCH = 1000  # Pub/Sub's largest Publish, Pull, Acknowledge and ModifyAckDeadline
MAX_ACK_DEADLINE = 600
MIN_ACK_DEADLINE = 10  # the shortest a subscription may be created with
# The subscription's own ack deadline: how long the messages of a pull stay out before the
# lease is set on them. A worker killed between the Pull and that call (or a Pull whose
# answer never reached its caller) leaves them out this long, so it is Pub/Sub's shortest;
# every other lease is a deadline change after the pull.
SUBSCRIPTION_ACK_DEADLINE = MIN_ACK_DEADLINE
THREADS = 8  # publishes in flight
RETENTION_SECONDS = 7 * 24 * 3600  # the longest Pub/Sub keeps unacknowledged messages
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100  # Pub/Sub's range for a policy
BACKSTOP_DELIVERIES = 3  # deliveries beyond max_attempts before Pub/Sub's own dead-lettering
CHANGE_TRIES = 5
MAX_ATTEMPTS_LABEL = "taskfleet-max-attempts"
TASK_ID_ATTRIBUTE = "taskfleet_task_id"
ATTEMPTS_ATTRIBUTE = "taskfleet_attempts"
NOT_BEFORE_ATTRIBUTE = "taskfleet_not_before"
ERROR_ATTRIBUTE = "taskfleet_error"
MAX_ATTRIBUTE_BYTES = 1024
MAX_ERROR_CHARS = 300  # an attribute value holds 1,024 bytes; a character may take 3
SUBSCRIPTION_SUFFIX = "-sub"
DEAD_SUFFIX = "-dead"
_PROJECT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.:-]{2,61}[A-Za-z0-9]$")
_RESOURCE_RE = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
# The longest suffix a queue name gets: NAME-sub-dead-sub when the subscription is named.
_LONGEST_SUFFIX = len(SUBSCRIPTION_SUFFIX + DEAD_SUFFIX + SUBSCRIPTION_SUFFIX)


def _whole_seconds(value: float, lowest: int = 0) -> int:
    """Pub/Sub takes whole seconds up to 600: round up (a lease is never shorter than asked)."""
    return max(lowest, min(MAX_ACK_DEADLINE, math.ceil(value - 1e-9)))


def _id_attribute(task_id: str) -> str:
    """The task id as an attribute value (1,024 bytes at most: a longer one as its digest)."""
    if len(task_id.encode("utf-8")) <= MAX_ATTRIBUTE_BYTES:
        return task_id
    return "sha256-" + hashlib.sha256(task_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Copy:
    """A pulled message taken apart: the task, what its attributes say, and its ack id."""

    task: Task
    ack_id: str
    attempts_before: int
    delivery: int  # the delivery number of this copy; 0 without a dead-letter policy
    not_before: float | None
    error: str | None

    @property
    def attempt(self) -> int:
        return self.attempts_before + max(1, self.delivery)


class PubSubQueue(Queue):
    """A task queue in Google Cloud Pub/Sub; the module docstring says how it maps."""

    schemes: ClassVar[tuple[str, ...]] = ("pubsub",)
    extra: ClassVar[str | None] = "gcp"
    library: ClassVar[str | None] = "google.pubsub_v1"
    example_url: ClassVar[str] = "pubsub://PROJECT/NAME"
    name_in_query: ClassVar[bool] = False
    url_options: ClassVar[tuple[str, ...]] = ("endpoint", "exactly_once", "topic", "subscription")
    name_rule: ClassVar[str] = (
        "must be PROJECT/NAME: a Google Cloud project id, and a name of 3 to "
        f"{255 - _LONGEST_SUFFIX} letters, digits and '-_.~+%' that starts with a letter "
        "(not with 'goog')"
    )
    counts_tasks: ClassVar[bool] = False
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    # Only the dead letters: see `send_updates`.
    updates_data: ClassVar[bool] = True
    max_lease_seconds: ClassVar[float | None] = MAX_ACK_DEADLINE

    def __init__(
        self,
        project: str,
        name: str,
        *,
        max_attempts: int | None = None,
        endpoint: str | None = None,
        exactly_once: bool = False,
        topic: str | None = None,
        subscription: str | None = None,
        url: str | None = None,
        create: bool = True,
    ) -> None:
        from google.api_core import exceptions

        self.project = project
        self.name = f"{project}/{name}"
        self.url = url or f"pubsub://{project}/{name}"
        self.exactly_once = exactly_once
        self.topic = f"projects/{project}/topics/{topic or name}"
        subscription_id = subscription or name + SUBSCRIPTION_SUFFIX
        self.subscription = f"projects/{project}/subscriptions/{subscription_id}"
        dead_id = (subscription_id if subscription else name) + DEAD_SUFFIX
        self.dead_topic = f"projects/{project}/topics/{dead_id}"
        self.dead_subscription = f"projects/{project}/subscriptions/{dead_id}{SUBSCRIPTION_SUFFIX}"
        self._calls = Calls(THREADS, "taskfleet-pubsub")
        self.publisher, self.subscriber = _clients(endpoint)
        try:
            self.max_attempts, self.ack_deadline, self.delivery_numbers = self._open(
                attempts_for_new_queue(max_attempts), create
            )
        except QueueNotFoundError:
            self.close()
            raise
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as exc:
            self.close()
            if _passing(exc):  # a worker waits for it (`worker.outage.open_riding_out`)
                raise service_unavailable(
                    redact(self.url), f"opening: {type(exc).__name__}: {redact(str(exc))}"
                ) from None
            raise QueueConnectionError(
                f"cannot open the Pub/Sub queue {redact(self.url)}: {redact(str(exc))}"
            ) from None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def check_name(cls, name: str, url: str) -> None:
        project, _, topic = name.partition("/")
        if (
            not _PROJECT_RE.match(project)
            or not _RESOURCE_RE.match(topic)
            or len(topic) + _LONGEST_SUFFIX > 255
        ):
            raise QueueURLError(f"{redact(url)!r}: the Pub/Sub queue {name!r} {cls.name_rule}")

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> PubSubQueue:
        project, _, name = address.name.partition("/")
        options = address.options
        for option in ("topic", "subscription"):
            if option in options and not _RESOURCE_RE.match(options[option]):
                raise QueueURLError(
                    f"{redact(address.url)!r}: {option}={options[option]!r} is not a Pub/Sub "
                    "resource name (3 to 255 letters, digits and '-_.~+%', starting with a letter)"
                )
        exactly_once = options.get("exactly_once", "false").lower()
        if exactly_once not in ("true", "false"):
            raise QueueURLError(f"{redact(address.url)!r}: exactly_once must be true or false")
        return cls(
            project,
            name,
            max_attempts=max_attempts,
            endpoint=options.get("endpoint"),
            exactly_once=exactly_once == "true",
            topic=options.get("topic"),
            subscription=options.get("subscription"),
            url=address.url,
            create=create,
        )

    @classmethod
    def url_for(cls, address: QueueAddress, name: str) -> str:
        """The queue `name` in the same project, with the same endpoint: a topic or
        subscription the user named belongs to the queue it was given for."""
        kept = [(k, v) for k, v in address.options.items() if k in ("endpoint", "exactly_once")]
        return urlunsplit(address.parts._replace(netloc=name, path="", query=urlencode(kept)))

    def _open(self, max_attempts: int, create: bool) -> tuple[int, int, bool]:
        """Find the subscription (and the dead letters' subscription); with `create`, create
        what is missing. Opening an existing queue only reads, so it never needs the right to
        create. Returns the queue's max_attempts, its subscription's ack deadline and whether
        it numbers deliveries (has a dead-letter policy). `max_attempts` applies only to a
        subscription created now."""
        from google.api_core import exceptions

        current = self._get(self.subscription)
        if current is None:
            if not create:
                subscription_id = self.subscription.rsplit("/", 1)[-1]
                raise _not_found(self.url, self.project, subscription_id, self.subscriber)
            current = self._create(max_attempts)
        self.topic = current.topic  # a subscription the user made names its own topic
        policy = current.dead_letter_policy
        if policy.dead_letter_topic:
            self.dead_topic = policy.dead_letter_topic
        if create and self._get(self.dead_subscription) is None:
            with contextlib.suppress(exceptions.AlreadyExists):
                self.publisher.create_topic(name=self.dead_topic)
            with contextlib.suppress(exceptions.AlreadyExists):
                self.subscriber.create_subscription(
                    request={"name": self.dead_subscription, "topic": self.dead_topic}
                    | _retention()
                )
        label = current.labels.get(MAX_ATTEMPTS_LABEL)
        if label is not None and label.isdigit():
            attempts = int(label)
        elif policy.dead_letter_topic:  # made by hand with a policy: its limit is in force
            attempts = policy.max_delivery_attempts
        else:  # made by hand without one: the attempts asked for
            attempts = max_attempts
        ack_deadline = current.ack_deadline_seconds or MIN_ACK_DEADLINE
        return attempts, ack_deadline, bool(policy.dead_letter_topic)

    def _get(self, subscription: str) -> Any:
        """The subscription, or None if it does not exist."""
        from google.api_core import exceptions

        try:
            return self.subscriber.get_subscription(subscription=subscription)
        except exceptions.NotFound:
            return None

    def _create(self, max_attempts: int) -> Any:
        """Create the topic, the dead letters' topic and the subscription with its dead-letter
        policy and label; another process creating them at the same time is no error."""
        from google.api_core import exceptions

        for topic in (self.topic, self.dead_topic):
            with contextlib.suppress(exceptions.AlreadyExists):
                self.publisher.create_topic(name=topic)
        deliveries = max(
            MIN_DELIVERY_ATTEMPTS, min(MAX_DELIVERY_ATTEMPTS, max_attempts + BACKSTOP_DELIVERIES)
        )
        request = {
            "name": self.subscription,
            "topic": self.topic,
            "ack_deadline_seconds": SUBSCRIPTION_ACK_DEADLINE,
            "labels": {MAX_ATTEMPTS_LABEL: str(max_attempts)},
            "dead_letter_policy": {
                "dead_letter_topic": self.dead_topic,
                "max_delivery_attempts": deliveries,
            },
            "enable_exactly_once_delivery": self.exactly_once,
        } | _retention()
        try:
            return self.subscriber.create_subscription(request=request)
        except exceptions.AlreadyExists:
            return self.subscriber.get_subscription(subscription=self.subscription)

    # -- helpers --------------------------------------------------------------------------

    def _parallel(self, fn: Callable[[Any], Any], batches: list[Any]) -> list[Any]:
        """Run fn over batches, several in flight when there is more than one."""
        return self._calls.parallel(fn, batches)

    def _message(self, task: Task, attributes: dict[str, str] | None = None) -> Any:
        """The Pub/Sub message of a task: its JSON, with its id (and any more) as attributes;
        a task too large for one message is refused, naming it."""
        from google.pubsub_v1 import types

        data = task.to_json()
        if len(data) + ATTRIBUTE_ROOM > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(
                f"task {task.id!r} is {len(data):,} bytes as JSON; a Pub/Sub message holds at "
                f"most {MAX_MESSAGE_BYTES - ATTRIBUTE_ROOM:,} bytes of data (10 MB). Keep large "
                "inputs in storage and put their path in the task data."
            )
        return types.PubsubMessage(
            data=data, attributes={TASK_ID_ATTRIBUTE: _id_attribute(task.id), **(attributes or {})}
        )

    @contextlib.contextmanager
    def _service(self, doing: str) -> Iterator[None]:
        """The one place where the client library's errors become ours, for every call to
        Pub/Sub after opening: a passing failure (unavailable, throttled, timed out, the
        client's own retries spent) is `service_unavailable`'s error, any other refusal a
        `QueueConnectionError`; both name the queue with its URL redacted."""
        from google.api_core import exceptions

        try:
            yield
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as exc:
            cause = f"{doing}: {type(exc).__name__}: {redact(str(exc))}"
            if _passing(exc):
                raise service_unavailable(redact(self.url), cause) from None
            raise QueueConnectionError(f"Pub/Sub queue {redact(self.url)}: {cause}") from None

    def _publish(self, topic: str, messages: list[Any]) -> int:
        """One Publish call (the client retries transient failures); returns how many Pub/Sub
        accepted, which is all of them or an exception."""
        with self._service("publish"):
            response = self.publisher.publish(topic=topic, messages=messages, retry=_call_retry())
        return len(response.message_ids)

    def _copy_of(self, received: Any) -> _Copy | None:
        message = received.message
        try:
            task = Task.from_json(message.data)
        except (ValueError, KeyError, TypeError):
            log.warning(
                "Pub/Sub queue %s: message %s is not a taskfleet task; leaving it unacknowledged",
                self.name,
                message.message_id,
            )
            return None
        attributes = message.attributes
        not_before = attributes.get(NOT_BEFORE_ATTRIBUTE)
        return _Copy(
            task=task,
            ack_id=received.ack_id,
            attempts_before=int(attributes.get(ATTEMPTS_ATTRIBUTE, "0")),
            delivery=received.delivery_attempt if self.delivery_numbers else 0,
            not_before=float(not_before) if not_before else None,
            error=attributes.get(ERROR_ATTRIBUTE),
        )

    def _pull(self, subscription: str, n: int, wait_seconds: float) -> list[Any]:
        """One Pull of up to `n`; waits up to `wait_seconds` for the first message."""
        from google.api_core import exceptions

        with self._service("pull"):
            try:
                response = self.subscriber.pull(
                    request={
                        "subscription": subscription,
                        "max_messages": max(1, min(BATCH, n)),
                        "return_immediately": wait_seconds <= 0,
                    },
                    timeout=max(0.5, wait_seconds) if wait_seconds > 0 else 30,
                    retry=_call_retry(),
                )
            except exceptions.DeadlineExceeded:  # nothing came within the wait
                return []
        return list(response.received_messages)

    def _change(self, subscription: str, ack_ids: Sequence[str], seconds: int | None) -> None:
        """Acknowledge (`seconds` None) or change the deadline of ack ids, 1,000 per call, in
        parallel. An ack id Pub/Sub no longer honours (its lease passed on, or it was acked)
        is skipped; with exactly-once delivery the results are checked id by id, and the ids
        that failed for a passing reason are tried again."""
        batches = [list(ack_ids[i : i + BATCH]) for i in range(0, len(ack_ids), BATCH)]
        self._parallel(lambda batch: self._change_batch(subscription, batch, seconds), batches)

    def _change_batch(self, subscription: str, ack_ids: list[str], seconds: int | None) -> None:
        with self._service("acknowledge" if seconds is None else "modify_ack_deadline"):
            self._change_checked(subscription, ack_ids, seconds)

    def _change_checked(self, subscription: str, ack_ids: list[str], seconds: int | None) -> None:
        from google.api_core import exceptions

        pending = ack_ids
        for attempt in range(CHANGE_TRIES):
            try:
                if seconds is None:
                    self.subscriber.acknowledge(
                        subscription=subscription, ack_ids=pending, retry=_call_retry()
                    )
                else:
                    self.subscriber.modify_ack_deadline(
                        subscription=subscription,
                        ack_ids=pending,
                        ack_deadline_seconds=seconds,
                        retry=_call_retry(),
                    )
                return
            except exceptions.InvalidArgument as exc:
                failures = _ack_failures(exc)
                if failures is None:  # not said which: one by one, skipping the gone ones
                    if len(pending) == 1:
                        return
                    for ack_id in pending:
                        self._change_checked(subscription, [ack_id], seconds)
                    return
                pending = [a for a in pending if failures.get(a, "").startswith("TRANSIENT")]
                if not pending:
                    return
            except exceptions.FailedPrecondition as exc:  # exactly-once: per-id results
                failures = _ack_failures(exc) or {}
                pending = [a for a in pending if failures.get(a, "").startswith("TRANSIENT")]
                if not pending:
                    return
            if attempt < CHANGE_TRIES - 1:
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise service_unavailable(
            redact(self.url),
            f"Pub/Sub answered {len(pending)} acknowledgement(s) or deadline change(s) with a "
            f"passing failure {CHANGE_TRIES} times",
        )

    # -- protocol -------------------------------------------------------------------------

    def send(
        self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = BATCH
    ) -> SendResult:
        """Publish in batches of up to 1,000 (and 9 MB), many batches in flight.

        A task too large for one message stops the send before its batch goes out. The client
        retries a publish that failed for a passing reason; a task is counted as inserted only
        when Pub/Sub returned its message id. Any error part way waits for the batches in
        flight and raises `SendInterrupted` with the number Pub/Sub accepted.
        """
        tasks = as_tasks(tasks)  # plain dicts too
        batch_size = max(1, min(BATCH, batch_size or BATCH))
        result = SendResult()
        return self._calls.send_in_flight(
            self._batches(tasks, batch_size, result),
            lambda batch: self._publish(self.topic, batch),
            result,
        )

    def _batches(
        self, tasks: Iterable[Task], batch_size: int, result: SendResult
    ) -> Iterator[list[Any]]:
        batch: list[Any] = []
        batch_bytes = 0
        for task in tasks:
            try:
                message = self._message(task)
            except MessageTooLargeError:
                if batch:  # the tasks before it are sent, as the message says
                    yield batch
                raise
            size = len(message.data) + ATTRIBUTE_ROOM
            if batch and (len(batch) >= batch_size or batch_bytes + size > MAX_REQUEST_BYTES):
                yield batch
                batch, batch_bytes = [], 0
            batch.append(message)
            batch_bytes += size
            result.ids_seen += 1
        if batch:
            yield batch

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        """Pull up to `max_messages`, waiting up to `wait_seconds` for the first one.

        Copies delivered for attempt `max_attempts + 1` go to the dead letters and are
        reported; delayed copies not yet due are hidden again. The leases of the others are
        set to `lease_seconds` (no call when that is the subscription's ack deadline).
        """
        received = Received()
        if max_messages <= 0:
            return received
        lease = _whole_seconds(lease_seconds, 1)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while len(received) < max_messages:
            waiting = not received and not received.dead_lettered
            left = deadline - time.monotonic()
            want = max_messages - len(received)
            raw = self._pull(self.subscription, want, left if waiting else 0.0)
            leased = self._sort(raw, received)
            if leased and lease != self.ack_deadline:
                self._change(self.subscription, [m.receipt for m in leased], lease)
            received.extend(leased)
            settled = received or received.dead_lettered
            if settled and len(raw) < want:
                break
            if not settled and deadline - time.monotonic() <= 0:
                break
            if not raw:  # an empty pull may come back before the wait is over
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return received

    def _sort(self, raw: list[Any], received: Received) -> list[Message]:
        """Take pulled messages apart: the ones to lease are returned; spent ones are moved to
        the dead letters (and reported in `received`); delayed ones are hidden or renewed."""
        now = time.time()
        leased: list[Message] = []
        spent: list[_Copy] = []
        for item in raw:
            copy = self._copy_of(item)
            if copy is None:
                continue
            if copy.not_before is not None and self._delayed(copy, now):
                continue
            if copy.attempt > self.max_attempts:
                spent.append(copy)
            else:
                leased.append(
                    Message(copy.task, copy.ack_id, copy.attempt, copy.task.dependency_results)
                )
        if spent:
            error = expired_lease_error(self.max_attempts, self.max_attempts)
            self._to_dead_letters([(c.task, self.max_attempts, error) for c in spent])
            self._change(self.subscription, [c.ack_id for c in spent], None)
            received.dead_lettered.extend(
                DeadLetter(c.task, self.max_attempts, error) for c in spent
            )
        return leased

    def _delayed(self, copy: _Copy, now: float) -> bool:
        """Handle a copy that carries a due time; True if it is not to be leased now.

        Not due: hidden for the time left (600 s at most); one that nears the policy's
        delivery limit while hidden is published again as it is, so Pub/Sub never
        dead-letters it. Due, where Pub/Sub numbers deliveries: published again without its
        due time and the old copy acknowledged, so that the hidden deliveries count no attempt
        and a later retry of it (a deadline change) counts as any other. Without delivery
        numbers a due copy is leased as it is.
        """
        assert copy.not_before is not None
        attributes = {ATTEMPTS_ATTRIBUTE: str(copy.attempts_before)}
        if copy.not_before > now:
            if copy.delivery < MIN_DELIVERY_ATTEMPTS - 1:
                seconds = _whole_seconds(copy.not_before - now, 1)
                self._change(self.subscription, [copy.ack_id], seconds)
                return True
            attributes[NOT_BEFORE_ATTRIBUTE] = repr(copy.not_before)
        elif not self.delivery_numbers:
            return False
        self._publish(self.topic, [self._message(copy.task, attributes)])
        self._change(self.subscription, [copy.ack_id], None)
        return True

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        """Acknowledge, 1,000 ack ids per call; an ack id whose lease passed on is accepted by
        Pub/Sub (or, with exactly-once delivery, skipped: the task is settled either way)."""
        self._change(self.subscription, [m.receipt for m in messages], None)

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        if message.attempt >= self.max_attempts:
            self.dead_letter(message, error)
            return False
        if self.delivery_numbers and delay_seconds <= MAX_ACK_DEADLINE:
            self._change(self.subscription, [message.receipt], _whole_seconds(delay_seconds))
            return True
        attributes = {ATTEMPTS_ATTRIBUTE: str(message.attempt)}
        if delay_seconds > 0:
            attributes[NOT_BEFORE_ATTRIBUTE] = repr(time.time() + delay_seconds)
        self._publish(self.topic, [self._message(message.task, attributes)])
        self._change(self.subscription, [message.receipt], None)
        return True

    def _to_dead_letters(self, letters: list[tuple[Task, int, str | None]]) -> None:
        messages = []
        for task, attempts, error in letters:
            attributes = {ATTEMPTS_ATTRIBUTE: str(attempts)}
            if error:
                attributes[ERROR_ATTRIBUTE] = error[:MAX_ERROR_CHARS]
            messages.append(self._message(task, attributes))
        for start in range(0, len(messages), BATCH):
            self._publish(self.dead_topic, messages[start : start + BATCH])

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        """Publish the task to the dead-letter topic with its error, then acknowledge it here
        (in that order: a crash between the two leaves a duplicate, never a loss)."""
        self._to_dead_letters([(message.task, message.attempt, error)])
        self.ack([message])

    def release(self, messages: Sequence[Message]) -> None:
        """Visible again at once, the attempt not counted: a deadline of 0, or, where Pub/Sub
        numbers deliveries (the next one would count), a new copy with the attempts spent
        before this one, and the old one acknowledged."""
        if not messages:
            return
        if not self.delivery_numbers:
            self._change(self.subscription, [m.receipt for m in messages], 0)
            return
        copies = [self._message(m.task, {ATTEMPTS_ATTRIBUTE: str(m.attempt - 1)}) for m in messages]
        for start in range(0, len(copies), BATCH):
            self._publish(self.topic, copies[start : start + BATCH])
        self.ack(messages)

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        self._change(
            self.subscription, [m.receipt for m in messages], _whole_seconds(lease_seconds, 1)
        )

    def stats(self) -> QueueStats:
        """What Pub/Sub lets us count: the dead letters, by reading the dead-letter subscription
        once (each is held for a moment and given back). The Pub/Sub API counts no messages, so
        visible, leased and delayed are None (unknown), and the whole is marked approximate."""
        dead = sum(1 for _ in self._scan_dead(set()))
        return QueueStats(visible=None, leased=None, delayed=None, dead=dead, approximate=True)

    def _scan_dead(self, taken: set[str]) -> Iterator[_Copy]:
        """Every message of the dead-letter subscription once. They stay leased while the scan
        runs and are given back at the end (or when the caller stops early), except those whose
        ack ids the caller put in `taken`."""
        held: list[str] = []
        try:
            while True:
                raw = self._pull(self.dead_subscription, BATCH, 0.5)
                if not raw:
                    return
                self._change(self.dead_subscription, [r.ack_id for r in raw], 120)
                for item in raw:
                    held.append(item.ack_id)
                    copy = self._copy_of(item)
                    if copy is not None:
                        yield copy
        finally:
            give_back = [a for a in held if a not in taken]
            if give_back:
                self._change(self.dead_subscription, give_back, 0)

    def _dead_letter_of(self, copy: _Copy) -> DeadLetter:
        if copy.error is not None or copy.delivery == 0:
            return DeadLetter(copy.task, copy.attempts_before, copy.error)
        # moved by Pub/Sub's own dead-letter policy: its deliveries ran out
        return DeadLetter(
            copy.task, self.max_attempts, expired_lease_error(self.max_attempts, self.max_attempts)
        )

    def dead_letters(self) -> Iterator[DeadLetter]:
        for copy in self._scan_dead(set()):
            yield self._dead_letter_of(copy)

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Publish dead letters back as new messages (fresh attempts), then acknowledge them
        on the dead-letter subscription."""
        wanted = None if ids is None else set(ids)
        if wanted is not None and not wanted:
            return 0
        moved: list[_Copy] = []
        taken: set[str] = set()
        for copy in self._scan_dead(taken):
            if wanted is not None and copy.task.id not in wanted:
                continue
            moved.append(copy)
            taken.add(copy.ack_id)
            if wanted is not None:
                wanted.discard(copy.task.id)
                if not wanted:
                    break
        messages = [self._message(c.task) for c in moved]
        batches = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
        self._parallel(lambda batch: self._publish(self.topic, batch), batches)
        self._change(self.dead_subscription, [c.ack_id for c in moved], None)
        return len(moved)

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """Give the dead letters the batches' data, and publish nothing else.

        A Pub/Sub message cannot be read or changed except by pulling it, and pulling the task
        subscription would take tasks from workers, so only the dead-letter subscription, which
        no worker reads, is compared: each dead letter whose data differs is published to the
        dead-letter topic again with the new data (its attempts and error kept) and the old
        copy acknowledged, in that order (a crash between the two leaves both, never
        neither), so that `redrive` runs the fixed data. Under `rerun_completed` the fixed copy
        goes to the task topic instead (a redrive at once). Every other task of the batches is
        counted as `not_sent`: a topic cannot tell a new task from one it holds, and
        publishing them would queue those twice.
        """
        result = SendResult()
        changes = result.changes
        held: set[str] = set()  # kept leased past the scan's end, given back below
        replaced: list[str] = []
        try:
            dead: dict[str, list[_Copy]] = {}
            for copy in self._scan_dead(held):
                held.add(copy.ack_id)
                dead.setdefault(copy.task.id, []).append(copy)
            replace: list[tuple[Task, _Copy]] = []
            for task in tasks_of(batches):
                result.ids_seen += 1
                copies = dead.pop(task.id, None)
                if copies is None:
                    changes.not_sent += 1
                    continue
                result.already_present += 1
                changed = [(task, copy) for copy in copies if copy.task != task]
                if changed:
                    replace.extend(changed)
                    if rerun_completed:
                        changes.rerun += 1
                    else:
                        changes.dead_updated += 1
            if rerun_completed:
                messages = [self._message(task) for task, _ in replace]
                for start in range(0, len(messages), BATCH):
                    self._publish(self.topic, messages[start : start + BATCH])
            else:
                fixed = []
                for task, copy in replace:
                    letter = self._dead_letter_of(copy)
                    fixed.append((task, letter.attempts, letter.error))
                self._to_dead_letters(fixed)
            replaced = [copy.ack_id for _, copy in replace]
            if replaced:
                self._change(self.dead_subscription, replaced, None)
        finally:
            give_back = list(held.difference(replaced))
            if give_back:
                self._change(self.dead_subscription, give_back, 0)
        return result

    def purge(self) -> None:
        """Seek both subscriptions to now (every message published before counts as
        acknowledged); where seeking is refused, pull and acknowledge until empty."""
        from google.api_core import exceptions
        from google.protobuf import timestamp_pb2

        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        for subscription in (self.subscription, self.dead_subscription):
            with self._service("seek"):
                try:
                    self.subscriber.seek(request={"subscription": subscription, "time": now})
                    continue
                except (exceptions.Unimplemented, exceptions.FailedPrecondition):
                    pass
            while raw := self._pull(subscription, BATCH, 0.5):
                self._change(subscription, [r.ack_id for r in raw], None)

    def close(self) -> None:
        self._calls.close()
        _close_clients(self.publisher, self.subscriber)


def _clients(endpoint: str | None) -> tuple[Any, Any]:
    """The publisher and subscriber clients: Google's default credentials, or, for an
    emulator (`endpoint=`, else `PUBSUB_EMULATOR_HOST`), a plain channel without credentials,
    as the client library makes for the emulator."""
    import grpc
    from google.pubsub_v1 import PublisherClient, SubscriberClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    host = endpoint or os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return PublisherClient(), SubscriberClient()
    return (
        PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host))),
        SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host))),
    )


def _close_clients(publisher: Any, subscriber: Any) -> None:
    for client in (publisher, subscriber):
        if client is not None:
            client.transport.close()


#: How long the client library retries a passing failure of one call before the queue says
#: Pub/Sub is away: short, so that the worker's outage owner (with `--outage-seconds`), not a
#: call blocked inside the library, decides how long to wait and what to do meanwhile.
CALL_RETRY_SECONDS = 5.0


@functools.cache
def _call_retry() -> Any:
    """The client's retry of one call: its transient errors, backing off up to 1 s, for at
    most `CALL_RETRY_SECONDS`."""
    from google.api_core import retry

    return retry.Retry(
        predicate=retry.if_transient_error,
        initial=0.1,
        maximum=1.0,
        multiplier=2.0,
        timeout=CALL_RETRY_SECONDS,
    )


def _passing(exc: BaseException) -> bool:
    """A failure that may pass (Pub/Sub unavailable, throttled, timed out, the client's own
    retries spent), not a refusal."""
    from google.api_core import exceptions

    return isinstance(
        exc,
        (
            exceptions.ServiceUnavailable,
            exceptions.InternalServerError,
            exceptions.Aborted,
            exceptions.ResourceExhausted,
            exceptions.DeadlineExceeded,
            exceptions.Unknown,
            exceptions.RetryError,
        ),
    )


def service_unavailable(queue: str, cause: str) -> QueueUnavailableError:
    """The error for Pub/Sub being away for now (the same call may well succeed later), which
    a worker rides out (`taskfleet.worker.outage`)."""
    return QueueUnavailableError(queue, cause)


def _not_found(url: str, project: str, subscription_id: str, subscriber: Any) -> QueueNotFoundError:
    """The error for a queue whose subscription does not exist, with the project's nearest
    subscription names (when the account may list them)."""
    from google.api_core import exceptions

    try:
        existing = [
            s.name.rsplit("/", 1)[-1]
            for s in subscriber.list_subscriptions(request={"project": f"projects/{project}"})
        ]
    except exceptions.GoogleAPICallError:
        existing = []
    return queue_not_found(
        f"no Pub/Sub queue {redact(url)}: its subscription {subscription_id} does not exist in "
        "the project",
        subscription_id,
        existing,
    )


def _retention() -> dict[str, Any]:
    return {"message_retention_duration": {"seconds": RETENTION_SECONDS}}


def _ack_failures(exc: Exception) -> dict[str, str] | None:
    """The per-ack-id failures of an Acknowledge or ModifyAckDeadline with exactly-once
    delivery (`ack id -> PERMANENT_FAILURE_... | TRANSIENT_FAILURE_...`), or None when the
    error does not say."""
    for detail in getattr(exc, "details", None) or ():
        metadata = getattr(detail, "metadata", None)
        if metadata:
            return dict(metadata)
    return None
