"""The Amazon SQS queue: `sqs://NAME?region=REGION[&endpoint_url=URL][&max_attempts=N]`.

Loading creates the queue (`create=True`; every other opening only reads), with a dead-letter
queue `NAME-dlq`, its `max_attempts` in the tag `taskfleet-max-attempts`, and a redrive policy
whose `maxReceiveCount` is a few receives above `max_attempts`. `receive` moves a message that SQS
hands out for attempt `max_attempts + 1` (its last lease expired) to the dead-letter queue
itself, and reports it; SQS's own redrive is only the backstop for a move that failed again and
again. An existing queue keeps its own `max_attempts` (a queue made before the tag existed: its
`maxReceiveCount`, and SQS moves its spent tasks unseen).
`NAME.fifo` makes a FIFO queue (its dead-letter queue is `NAME-dlq.fifo`): the task id is the
deduplication id, so loading the same tasks twice within SQS's 5-minute deduplication window
enqueues them once, and each task is its own message group, so FIFO order costs no parallelism.

What SQS cannot do, and what we do instead (the contract suite lists these in one place):
- A standard queue has no idempotent send: loading twice queues duplicates (workers still run
  each at least once; the duplicates are counted by the monitor from events). FIFO dedupes
  only within 5 minutes, and SQS answers a message it drops as a duplicate as it answers any
  other. `SendResult.already_present` is always 0, and `load_note` says the counts are of
  messages SQS accepted.
- A released delivery still counts as a receive (`release` is a visibility timeout of 0).
- An earlier receipt handle of a message still works, so a stale retry or release changes the
  current delivery. SQS has no place for a retry's error: only dead letters carry one.
- Counts are SQS's approximate attributes; delayed retries are in-flight messages, so they show
  as leased. Completed and inserted totals are unknown (None).
- Visibility timeouts and waits are whole seconds: leases are rounded up.

Every call is batched: SendMessageBatch of 10 with many batches in flight on a thread pool,
ReceiveMessage of up to 10 with long polling, DeleteMessageBatch and
ChangeMessageVisibilityBatch of 10. Credentials come from boto3's default chain; nothing we log
or raise contains a secret (URLs go through `redact`). Every call goes through one wrapper of
the client (`_Service`): SQS away for now (no connection, a connection cut or timed out,
throttling, a 5xx answer), once boto3's few retries are spent, raises `QueueUnavailableError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

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

MAX_MESSAGE_BYTES = 256 * 1024  # per message, and per SendMessageBatch request
BATCH = 10  # SQS's largest batch
MAX_VISIBILITY = 12 * 3600
MAX_WAIT = 20  # longest long poll
THREADS = 16  # batches in flight
RETENTION = 14 * 24 * 3600  # the longest SQS allows: a long job must not lose tasks
SEND_TRIES = 8
BOTO_ATTEMPTS = 3  # boto3's own tries of a call (its retries back off for a few seconds at most)
MAX_RECEIVE_COUNT = 1000  # the largest maxReceiveCount SQS allows
# Receives beyond max_attempts before SQS's own redrive moves a message: only a message that
# `receive` failed to move to the dead-letter queue that many times goes there unreported.
BACKSTOP_RECEIVES = 3
MAX_ATTEMPTS_TAG = "taskfleet-max-attempts"
MAX_LISTED_QUEUES = 1000  # one ListQueues page, for the names a not-found error suggests
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_DEDUP_RE = re.compile(r"^[!-~]{1,128}$")  # SQS: 1-128 printable ASCII characters
ERROR_ATTRIBUTE = "taskfleet_error"
ATTEMPTS_ATTRIBUTE = "taskfleet_attempts"
MAX_ERROR_CHARS = 8192
_GONE = {"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"}
# Error codes of a service that is overloaded or failing for now (besides any 5xx status).
_AWAY_CODES = {
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
}


def is_unavailable(exc: BaseException) -> bool:
    """SQS is away for now (no connection, a connection cut or timed out, throttling, a 5xx
    answer) rather than refusing the request. boto3's own retries have been spent by then."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError)):  # EndpointConnection, ReadTimeout...
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in _AWAY_CODES or code.endswith(".RequestThrottled")
    return False


class _Service:
    """The boto3 client, through which every call to SQS goes: an operation that fails because
    SQS is away raises `QueueUnavailableError` naming the queue (redacted); every other
    attribute (`exceptions`, `meta`) is the client's own."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name in ("exceptions", "meta") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except Exception as exc:
                if is_unavailable(exc):
                    raise QueueUnavailableError(
                        self._url, f"{type(exc).__name__}: {redact(str(exc))}"
                    ) from None
                raise

        return call


def parse_sqs_url(url: str) -> tuple[str, dict[str, str], int | None]:
    """`sqs://NAME?region=R&endpoint_url=U&max_attempts=N` -> (name, client options, attempts)."""
    address = SQSQueue.parse_url(url)
    return address.name, address.options, address.max_attempts


def _seconds(value: float, limit: int) -> int:
    """SQS takes whole seconds: round up (a lease must never be shorter than asked)."""
    return max(0, min(limit, math.ceil(value - 1e-9)))


def _dedup_id(task_id: str) -> str:
    """The task id if SQS accepts it as a deduplication/group id, else a digest of it."""
    if _DEDUP_RE.match(task_id):
        return task_id
    return "sha256-" + hashlib.sha256(task_id.encode("utf-8")).hexdigest()


def _body(task: Task) -> str:
    """The task as an SQS body. SQS refuses U+FFFE and U+FFFF: those are written escaped."""
    text = task.to_json().decode("utf-8")
    if "\ufffe" in text or "\uffff" in text:
        text = json.dumps(json.loads(text), ensure_ascii=True)
    return text


def native_receive_limit(max_attempts: int) -> int:
    """The `maxReceiveCount` of a new queue's redrive policy: the backstop above the attempts
    that `receive` enforces itself."""
    return min(MAX_RECEIVE_COUNT, max_attempts + BACKSTOP_RECEIVES)


class SQSQueue(Queue):
    """A task queue in Amazon SQS; see the module docstring for what differs from the others."""

    schemes: ClassVar[tuple[str, ...]] = ("sqs",)
    extra: ClassVar[str | None] = "aws"
    library: ClassVar[str | None] = "boto3"
    example_url: ClassVar[str] = "sqs://NAME?region=REGION"
    name_in_query: ClassVar[bool] = False
    url_options: ClassVar[tuple[str, ...]] = ("region", "endpoint_url")
    name_rule: ClassVar[str] = (
        "must be 1-76 letters, digits, '-' or '_' (optionally ending in .fifo), so that "
        "NAME-dlq fits in SQS's 80 characters"
    )
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    # Only the dead letters: see `send_updates`.
    updates_data: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int | None = None,
        url: str | None = None,
        client: Any = None,
        create: bool = True,
    ) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        attempts = attempts_for_new_queue(max_attempts)
        self.name = name
        self.fifo = name.endswith(".fifo")
        self.dlq_name = name[:-5] + "-dlq.fifo" if self.fifo else name + "-dlq"
        self.url = url or f"sqs://{name}" + (f"?region={region}" if region else "")
        self._calls = Calls(THREADS, "taskfleet-sqs")
        try:
            self.client = _Service(
                client
                or boto3.session.Session().client(
                    "sqs",
                    region_name=region,
                    endpoint_url=endpoint_url,
                    config=botocore.config.Config(
                        max_pool_connections=THREADS + 4,
                        # short: SQS away for longer is the worker's outage owner's to wait for
                        retries={"mode": "standard", "max_attempts": BOTO_ATTEMPTS},
                    ),
                ),
                redact(self.url),
            )
            self.queue_url, self.dlq_url, self.max_attempts = self._open(attempts, create)
        except botocore.exceptions.NoRegionError:
            raise QueueURLError(
                f"{redact(self.url)!r}: no AWS region; add ?region=REGION to the URL or set "
                "AWS_DEFAULT_REGION"
            ) from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise QueueConnectionError(
                f"cannot open the SQS queue {redact(self.url)}: {redact(str(exc))}"
            ) from None
        members = self.client.meta.service_model.operation_model("ReceiveMessage").input_shape
        self._attributes_param = (
            "MessageSystemAttributeNames"
            if "MessageSystemAttributeNames" in members.members
            else "AttributeNames"
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def check_name(cls, name: str, url: str) -> None:
        base = name[: -len(".fifo")] if name.endswith(".fifo") else name
        if not _NAME_RE.match(base) or len(base) + len("-dlq") + (5 if base != name else 0) > 80:
            raise QueueURLError(f"{redact(url)!r}: the SQS queue name {name!r} {cls.name_rule}")

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> SQSQueue:
        return cls(
            address.name,
            region=address.options.get("region"),
            endpoint_url=address.options.get("endpoint_url"),
            max_attempts=max_attempts,
            url=address.url,
            create=create,
        )

    @classmethod
    def event_queue_name(cls, name: str) -> str:
        """`NAME-events`: a standard queue even for a FIFO task queue (events need no order
        and carry unique ids)."""
        base = name[: -len(".fifo")] if name.endswith(".fifo") else name
        return f"{base}-events"

    def _queue_url(self, name: str) -> str | None:
        try:
            return self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except self.client.exceptions.QueueDoesNotExist:
            return None

    def _create(
        self, name: str, attributes: dict[str, str], tags: dict[str, str] | None = None
    ) -> str:
        if self.fifo:
            attributes = {**attributes, "FifoQueue": "true"}
        extra: dict[str, Any] = {"tags": tags} if tags else {}
        return self.client.create_queue(QueueName=name, Attributes=attributes, **extra)["QueueUrl"]

    def _open(self, max_attempts: int, create: bool) -> tuple[str, str | None, int]:
        """Find the queue and its dead-letter queue, creating them with `create`; return
        their URLs and the queue's max_attempts (`max_attempts` applies only to a queue created
        now). Without `create` nothing is created or changed: a queue that does not exist is
        an error, and the dead-letter queue of one made by hand without any (None here) is
        made when a task is first dead-lettered."""
        queue_url = self._queue_url(self.name)
        if queue_url is None and not create:
            raise queue_not_found(
                f"no SQS queue {self.name!r} ({redact(self.url)})", self.name, self._queue_names()
            )
        if queue_url is not None:
            attributes = self.client.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})  # none at all when the queue has no redrive policy
            tags = self.client.list_queue_tags(QueueUrl=queue_url).get("Tags", {})
            if "RedrivePolicy" in attributes:
                policy = json.loads(attributes["RedrivePolicy"])
                self.dlq_name = policy["deadLetterTargetArn"].rsplit(":", 1)[-1]
                dlq_url = self._queue_url(self.dlq_name)
                if dlq_url is None and create:
                    dlq_url = self._create(
                        self.dlq_name, {"MessageRetentionPeriod": str(RETENTION)}
                    )
                if MAX_ATTEMPTS_TAG in tags:
                    return queue_url, dlq_url, int(tags[MAX_ATTEMPTS_TAG])
                # Made before the tag, or by hand: SQS's own redrive is its max_attempts.
                return queue_url, dlq_url, int(policy["maxReceiveCount"])
            if not create:
                attempts = int(tags.get(MAX_ATTEMPTS_TAG, max_attempts))
                return queue_url, self._queue_url(self.dlq_name), attempts
            return queue_url, self._attach_dead_letter_queue(queue_url, max_attempts), max_attempts
        dlq_url, policy_text = self._dead_letter_queue(max_attempts)
        queue_url = self._create(
            self.name,
            {"MessageRetentionPeriod": str(RETENTION), "RedrivePolicy": policy_text},
            {MAX_ATTEMPTS_TAG: str(max_attempts)},
        )
        return queue_url, dlq_url, max_attempts

    def _dead_letter_queue(self, max_attempts: int) -> tuple[str, str]:
        """Find or create the dead-letter queue; return its URL and the redrive policy that
        points at it."""
        dlq_url = self._queue_url(self.dlq_name) or self._create(
            self.dlq_name, {"MessageRetentionPeriod": str(RETENTION)}
        )
        dlq_arn = self.client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy_text = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": native_receive_limit(max_attempts)}
        )
        return dlq_url, policy_text

    def _attach_dead_letter_queue(self, queue_url: str, max_attempts: int) -> str:
        """Give an existing queue without a dead-letter queue ours, and its max_attempts tag."""
        dlq_url, policy_text = self._dead_letter_queue(max_attempts)
        self.client.set_queue_attributes(
            QueueUrl=queue_url, Attributes={"RedrivePolicy": policy_text}
        )
        self.client.tag_queue(QueueUrl=queue_url, Tags={MAX_ATTEMPTS_TAG: str(max_attempts)})
        return dlq_url

    def _dlq_for_writing(self) -> str:
        """The dead-letter queue's URL, made now if the queue was opened without one."""
        if self.dlq_url is None:
            self.dlq_url = self._attach_dead_letter_queue(self.queue_url, self.max_attempts)
        return self.dlq_url

    def _queue_names(self) -> list[str]:
        """Names of the task queues of this account and region (one ListQueues page), for a
        `QueueNotFoundError`; dead-letter and event queues are left out."""
        import botocore.exceptions

        try:
            urls = self.client.list_queues(MaxResults=MAX_LISTED_QUEUES).get("QueueUrls", [])
        except botocore.exceptions.ClientError:  # not allowed to list: nothing to suggest
            return []
        names = [url.rsplit("/", 1)[-1] for url in urls]
        return [n for n in names if not re.search(r"-(dlq|events)(\.fifo)?$", n)]

    def load_note(self) -> str:
        """What a load's count means here: SQS says only that it accepted each message."""
        if self.fifo:
            return (
                "counts are of messages SQS accepted: a FIFO queue silently drops a task whose "
                "id was sent in the last 5 minutes (deduplication), and does not say so"
            )
        return (
            "counts are of messages SQS accepted: a standard queue does not skip tasks it holds "
            "already, so loading the same file again queues them twice"
        )

    # -- helpers --------------------------------------------------------------------------

    def _parallel(self, fn: Callable[[Any], Any], batches: list[Any]) -> list[Any]:
        """Run fn over batches, several in flight when there is more than one."""
        return self._calls.parallel(fn, batches)

    def _entries_call(
        self, operation: str, queue_url: str, entries: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One *Batch call, retrying the entries that failed through no fault of ours.

        Returns the entries that failed for good, with SQS's error code and message added as
        `_code` and `_message`, so that each caller decides what a failure means (a receipt
        SQS no longer knows is harmless for `ack`, fatal for nothing).
        """
        by_id = {e["Id"]: e for e in entries}
        pending = entries
        final: list[dict[str, Any]] = []
        for attempt in range(SEND_TRIES):
            response = getattr(self.client, operation)(QueueUrl=queue_url, Entries=pending)
            retry: list[dict[str, Any]] = []
            for failure in response.get("Failed", []):
                entry = {
                    **by_id[failure["Id"]],
                    "_code": failure.get("Code", ""),
                    "_message": failure.get("Message", ""),
                }
                (final if failure.get("SenderFault") else retry).append(entry)
            if not retry:
                return final
            if attempt == SEND_TRIES - 1:
                return final + retry
            pending = [by_id[e["Id"]] for e in retry]
            time.sleep(min(2.0, 0.05 * 2**attempt))
        return final  # pragma: no cover

    @staticmethod
    def _receipt_batches(
        receipts: Sequence[str], extra: dict[str, Any] | None = None
    ) -> list[list[dict[str, Any]]]:
        entries = [
            {"Id": str(i), "ReceiptHandle": receipt, **(extra or {})}
            for i, receipt in enumerate(receipts)
        ]
        return [entries[i : i + BATCH] for i in range(0, len(entries), BATCH)]

    # -- protocol -------------------------------------------------------------------------

    def send(
        self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = BATCH
    ) -> SendResult:
        """Send in batches of 10 (and at most 256 KiB), many batches in flight.

        A task too large for one message stops the send before its batch goes out. Entries
        that SQS failed are retried; a task is counted as inserted only when SQS accepted it.
        Any error part way (a bad task, a bad entry in the task file, SQS failing) waits for
        the batches in flight and raises `SendInterrupted` with the number SQS accepted.
        """
        tasks = as_tasks(tasks)  # plain dicts too
        batch_size = max(1, min(BATCH, batch_size or BATCH))
        result = SendResult()
        return self._calls.send_in_flight(
            self._send_batches(tasks, batch_size, result), self._send_batch, result
        )

    def _send_batches(
        self, tasks: Iterable[Task], batch_size: int, result: SendResult
    ) -> Iterator[list[tuple[Task, str]]]:
        batch: list[tuple[Task, str]] = []
        batch_bytes = 0
        for task in tasks:
            body = _body(task)
            size = len(body.encode("utf-8"))
            if size > MAX_MESSAGE_BYTES:
                if batch:  # the tasks before it are sent, as the message says
                    yield batch
                raise MessageTooLargeError(
                    f"task {task.id!r} is {size:,} bytes as JSON; an SQS message holds at most "
                    f"{MAX_MESSAGE_BYTES:,} bytes (256 KiB). Keep large inputs in storage and "
                    "put their path in the task data."
                )
            if batch and (len(batch) >= batch_size or batch_bytes + size > MAX_MESSAGE_BYTES):
                yield batch
                batch, batch_bytes = [], 0
            batch.append((task, body))
            batch_bytes += size
            result.ids_seen += 1
        if batch:
            yield batch

    def _send_batch(self, batch: list[tuple[Task, str]]) -> int:
        entries = []
        for i, (task, body) in enumerate(batch):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
            if self.fifo:
                entry["MessageDeduplicationId"] = _dedup_id(task.id)
                entry["MessageGroupId"] = _dedup_id(task.id)
            entries.append(entry)
        failed = self._entries_call("send_message_batch", self.queue_url, entries)
        if failed:
            first = failed[0]
            task_id = batch[int(first["Id"])][0].id
            raise QueueConnectionError(
                f"SQS refused {len(failed)} task(s) of a batch, for example {task_id!r}: "
                f"{first['_code']}: {first['_message']}"
            )
        return len(entries)

    def _receive(
        self, queue_url: str, n: int, visibility: int, wait_seconds: int, extra: bool = False
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max(1, min(BATCH, n)),
            "VisibilityTimeout": visibility,
            "WaitTimeSeconds": wait_seconds,
            self._attributes_param: ["ApproximateReceiveCount"],
        }
        if extra:
            kwargs["MessageAttributeNames"] = [ERROR_ATTRIBUTE, ATTEMPTS_ATTRIBUTE]
        return self.client.receive_message(**kwargs).get("Messages", [])

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        """Up to `max_messages`, 10 per call; only the first call long-polls.

        A message received for attempt `max_attempts + 1` (its lease expired on the last
        attempt, or it was given back then: SQS counts every receive) is moved to the
        dead-letter queue and reported instead of leased.
        """
        received = Received()
        if max_messages <= 0:
            return received
        visibility = max(1, _seconds(lease_seconds, MAX_VISIBILITY))
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while len(received) < max_messages:
            wait_now = 0
            if not received and not received.dead_lettered:
                wait_now = _seconds(deadline - time.monotonic(), MAX_WAIT)
            want = min(BATCH, max_messages - len(received))
            raw = self._receive(self.queue_url, want, visibility, wait_now)
            spent: list[tuple[dict[str, Any], Task]] = []
            for m in raw:
                try:
                    task = Task.from_json(m["Body"])
                except (ValueError, KeyError, TypeError):
                    log.warning(
                        "SQS queue %s: message %s is not a taskfleet task; leaving it to the "
                        "dead-letter queue",
                        self.name,
                        m.get("MessageId"),
                    )
                    continue
                attempt = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                if attempt > self.max_attempts:
                    spent.append((m, task))
                else:
                    received.append(
                        Message(task, m["ReceiptHandle"], attempt, task.dependency_results)
                    )
            if spent:
                received.dead_lettered.extend(self._move_spent(spent))
            done = received or received.dead_lettered or time.monotonic() >= deadline
            if len(raw) < want and done:
                break
        return received

    def _move_spent(self, spent: list[tuple[dict[str, Any], Task]]) -> list[DeadLetter]:
        """Move messages whose attempts are spent to the dead-letter queue: one
        SendMessageBatch there, then one DeleteMessageBatch here (in that order: a failure
        between the two leaves a duplicate, never a loss). A message SQS refused to take stays
        leased here and comes back for the next receive."""
        error = expired_lease_error(self.max_attempts, self.max_attempts)
        moved: list[DeadLetter] = []
        for start in range(0, len(spent), BATCH):
            chunk = spent[start : start + BATCH]
            entries = [
                {"Id": str(i), **self._dead_letter_fields(task, self.max_attempts, error)}
                for i, (_, task) in enumerate(chunk)
            ]
            refused = {
                f["Id"]
                for f in self._entries_call("send_message_batch", self._dlq_for_writing(), entries)
            }
            if refused:
                log.warning(
                    "SQS queue %s: the dead-letter queue refused %d spent task(s); they will be "
                    "moved when received again",
                    self.name,
                    len(refused),
                )
            taken = [(i, m, task) for i, (m, task) in enumerate(chunk) if str(i) not in refused]
            if not taken:
                continue
            deletes = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m, _ in taken]
            failed = self._entries_call("delete_message_batch", self.queue_url, deletes)
            self._raise_unless_gone("delete", failed)
            moved.extend(DeadLetter(task, self.max_attempts, error) for _, _, task in taken)
        return moved

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        """DeleteMessageBatch; a receipt SQS no longer knows means the task is gone already."""

        def delete(batch: list[dict[str, Any]]) -> None:
            failed = self._entries_call("delete_message_batch", self.queue_url, batch)
            self._raise_unless_gone("delete", failed)

        self._parallel(delete, self._receipt_batches([m.receipt for m in messages]))

    def _raise_unless_gone(self, what: str, failed: list[dict[str, Any]]) -> None:
        serious = [f for f in failed if f["_code"] not in _GONE]
        if serious:
            raise QueueConnectionError(
                f"SQS could not {what} {len(serious)} message(s) of {self.name}: "
                f"{serious[0]['_code']}: {serious[0]['_message']}"
            )

    def _change_visibility(self, messages: Sequence[Message], seconds: int) -> None:
        def change(batch: list[dict[str, Any]]) -> None:
            failed = self._entries_call("change_message_visibility_batch", self.queue_url, batch)
            self._raise_unless_gone("change the visibility of", failed)

        batches = self._receipt_batches(
            [m.receipt for m in messages], {"VisibilityTimeout": seconds}
        )
        self._parallel(change, batches)

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        if message.attempt >= self.max_attempts:
            self.dead_letter(message, error)
            return False
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message.receipt,
                VisibilityTimeout=_seconds(delay_seconds, MAX_VISIBILITY),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _GONE:
                raise
        return True

    def _dead_letter_fields(self, task: Task, attempts: int, error: str | None) -> dict[str, Any]:
        """The body, attributes and FIFO ids of a task's message in the dead-letter queue."""
        attributes: dict[str, Any] = {
            ATTEMPTS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(attempts)}
        }
        if error:
            attributes[ERROR_ATTRIBUTE] = {
                "DataType": "String",
                "StringValue": error[:MAX_ERROR_CHARS],
            }
        fields: dict[str, Any] = {"MessageBody": _body(task), "MessageAttributes": attributes}
        if self.fifo:
            fields["MessageGroupId"] = _dedup_id(task.id)
            fields["MessageDeduplicationId"] = uuid.uuid4().hex
        return fields

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        """Copy the task to the dead-letter queue with its error, then delete it here (in that
        order: a crash between the two leaves a duplicate, never a loss)."""
        from botocore.exceptions import ClientError

        self.client.send_message(
            QueueUrl=self._dlq_for_writing(),
            **self._dead_letter_fields(message.task, message.attempt, error),
        )
        try:
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _GONE:
                raise

    def release(self, messages: Sequence[Message]) -> None:
        """Visible at once (SQS still counts the receive)."""
        self._change_visibility(messages, 0)

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        self._change_visibility(messages, max(1, _seconds(lease_seconds, MAX_VISIBILITY)))

    def stats(self) -> QueueStats:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]

        def attributes(queue_url: str) -> dict[str, int]:
            got = self.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
            return {k: int(v) for k, v in got["Attributes"].items()}

        urls = [self.queue_url] if self.dlq_url is None else [self.queue_url, self.dlq_url]
        main, *dead = self._parallel(attributes, urls)
        return QueueStats(
            visible=main["ApproximateNumberOfMessages"],
            leased=main["ApproximateNumberOfMessagesNotVisible"],
            delayed=main["ApproximateNumberOfMessagesDelayed"],
            dead=sum(dead[0].values()) if dead else 0,
            approximate=True,
        )

    def _scan_dead(self, taken: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every message of the dead-letter queue once. Messages stay hidden while the scan
        runs and are given back at the end (or when the caller stops early), except those whose
        receipt handles the caller put in `taken`."""
        seen: set[str] = set()
        held: list[str] = []
        dlq_url = self.dlq_url
        if dlq_url is None:  # no dead-letter queue yet: no dead letters
            return
        try:
            while True:
                raw = self._receive(dlq_url, BATCH, 120, 1, extra=True)
                fresh = [m for m in raw if m["MessageId"] not in seen]
                if not fresh:
                    return
                for m in fresh:
                    seen.add(m["MessageId"])
                    held.append(m["ReceiptHandle"])
                    yield m
        finally:
            give_back = [r for r in held if r not in (taken or ())]
            entries = self._receipt_batches(give_back, {"VisibilityTimeout": 0})
            for batch in entries:
                self._entries_call("change_message_visibility_batch", dlq_url, batch)

    def _dead_letter_of(self, m: dict[str, Any]) -> DeadLetter | None:
        try:
            task = Task.from_json(m["Body"])
        except (ValueError, KeyError, TypeError):
            log.warning("SQS queue %s: dead letter %s is not a task", self.dlq_name, m["MessageId"])
            return None
        attrs = m.get("MessageAttributes", {})
        if ATTEMPTS_ATTRIBUTE in attrs:
            attempts = int(attrs[ATTEMPTS_ATTRIBUTE]["StringValue"])
            error = attrs.get(ERROR_ATTRIBUTE, {}).get("StringValue")
        else:  # moved by SQS's redrive policy: its last lease expired
            attempts = self.max_attempts
            error = expired_lease_error(attempts, self.max_attempts)
        return DeadLetter(task, attempts, error)

    def dead_letters(self) -> Iterator[DeadLetter]:
        for m in self._scan_dead():
            letter = self._dead_letter_of(m)
            if letter is not None:
                yield letter

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Send dead letters back as new messages (fresh receive counts), then delete them
        from the dead-letter queue."""
        wanted = None if ids is None else set(ids)
        moved: list[tuple[Task, str]] = []
        taken: set[str] = set()
        for m in self._scan_dead(taken):
            letter = self._dead_letter_of(m)
            if letter is None or (wanted is not None and letter.task.id not in wanted):
                continue
            moved.append((letter.task, m["ReceiptHandle"]))
            taken.add(m["ReceiptHandle"])
            if wanted is not None:
                wanted.discard(letter.task.id)
                if not wanted:
                    break
        batches = [moved[i : i + BATCH] for i in range(0, len(moved), BATCH)]
        self._parallel(self._redrive_batch, batches)
        return len(moved)

    def _redrive_batch(self, batch: list[tuple[Task, str]]) -> None:
        entries = []
        for i, (task, _) in enumerate(batch):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": _body(task)}
            if self.fifo:  # a fresh deduplication id: the task's own may be within 5 minutes
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
                entry["MessageGroupId"] = _dedup_id(task.id)
            entries.append(entry)
        failed = self._entries_call("send_message_batch", self.queue_url, entries)
        if failed:
            raise QueueConnectionError(
                f"SQS refused {len(failed)} redriven task(s): {failed[0]['_code']}"
            )
        deletes = [{"Id": str(i), "ReceiptHandle": r} for i, (_, r) in enumerate(batch)]
        self._entries_call("delete_message_batch", self._dlq_for_writing(), deletes)

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """Give the dead letters the batches' data, and send nothing else.

        SQS cannot read or change a message it holds except by receiving it, and receiving
        the main queue would take tasks from workers, so only the dead-letter queue, which no
        worker reads, is compared: each dead letter whose data differs is sent to the
        dead-letter queue again with the new data (its attempts and error kept) and the old
        copy deleted, in that order (a crash between the two leaves both, never neither), so
        that `redrive` runs the fixed data. Under `rerun_completed` the fixed copy goes to the
        main queue instead (a redrive at once). Every other task of the batches is counted as
        `not_sent`: SQS cannot tell a new task from one it holds, and sending them would
        queue those twice. The dead letters stay hidden while the batches are read (the
        caller has checked the whole file already), and are given back unchanged at the end.
        """
        result = SendResult()
        changes = result.changes
        held: set[str] = set()  # kept hidden past the scan's end, given back below
        replaced: set[str] = set()
        try:
            dead: dict[str, list[tuple[DeadLetter, str]]] = {}
            for m in self._scan_dead(held):
                letter = self._dead_letter_of(m)
                if letter is not None:
                    held.add(m["ReceiptHandle"])
                    dead.setdefault(letter.task.id, []).append((letter, m["ReceiptHandle"]))
            replace: list[tuple[Task, DeadLetter, str]] = []
            for task in tasks_of(batches):
                result.ids_seen += 1
                copies = dead.pop(task.id, None)
                if copies is None:
                    changes.not_sent += 1
                    continue
                result.already_present += 1
                changed = [(task, letter, r) for letter, r in copies if letter.task != task]
                if changed:
                    replace.extend(changed)
                    if rerun_completed:
                        changes.rerun += 1
                    else:
                        changes.dead_updated += 1
            batches_of_ten = [replace[i : i + BATCH] for i in range(0, len(replace), BATCH)]
            for done in self._parallel(
                lambda batch: self._replace_dead_batch(batch, rerun_completed), batches_of_ten
            ):
                replaced.update(done)
        finally:
            give_back = [r for r in held if r not in replaced]
            for batch in self._receipt_batches(give_back, {"VisibilityTimeout": 0}):
                self._entries_call("change_message_visibility_batch", self.dlq_url or "", batch)
        return result

    def _replace_dead_batch(
        self, batch: list[tuple[Task, DeadLetter, str]], to_main_queue: bool
    ) -> list[str]:
        """Send the fixed copies of a batch of dead letters (to the dead-letter queue, or to
        the main queue with fresh attempts), then delete the old ones; returns their receipt
        handles."""
        entries = []
        for i, (task, letter, _) in enumerate(batch):
            if to_main_queue:
                entry: dict[str, Any] = {"Id": str(i), "MessageBody": _body(task)}
                if self.fifo:
                    entry["MessageDeduplicationId"] = uuid.uuid4().hex
                    entry["MessageGroupId"] = _dedup_id(task.id)
            else:
                entry = {
                    "Id": str(i),
                    **self._dead_letter_fields(task, letter.attempts, letter.error),
                }
            entries.append(entry)
        target = self.queue_url if to_main_queue else self._dlq_for_writing()
        failed = self._entries_call("send_message_batch", target, entries)
        if failed:
            raise QueueConnectionError(
                f"SQS refused {len(failed)} fixed dead letter(s): {failed[0]['_code']}"
            )
        deletes = [{"Id": str(i), "ReceiptHandle": r} for i, (_, _, r) in enumerate(batch)]
        self._entries_call("delete_message_batch", self._dlq_for_writing(), deletes)
        return [r for _, _, r in batch]

    def purge(self) -> None:
        """PurgeQueue both queues; SQS allows one purge a minute, so a second purge within the
        minute deletes the messages it can receive instead."""
        from botocore.exceptions import ClientError

        for queue_url in (self.queue_url, self.dlq_url):
            if queue_url is None:
                continue
            try:
                self.client.purge_queue(QueueUrl=queue_url)
            except ClientError as exc:
                if "PurgeQueueInProgress" not in exc.response.get("Error", {}).get("Code", ""):
                    raise
                self._drain(queue_url)

    def _drain(self, queue_url: str) -> None:
        while True:
            raw = self._receive(queue_url, BATCH, 30, 0)
            if not raw:
                return
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(raw)
            ]
            self._entries_call("delete_message_batch", queue_url, entries)

    def close(self) -> None:
        self._calls.close()
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
