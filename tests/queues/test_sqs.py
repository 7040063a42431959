"""What the contract suite cannot see in the SQS backend: queue creation, the dead-letter policy
and the tasks receive dead-letters itself, FIFO ids, message size, partial batch failures, API
calls per task, secrets."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest

from taskfleet.errors import MessageTooLargeError, QueueConnectionError, QueueURLError
from taskfleet.queues import SendInterrupted, event_queue_url, open_queue
from taskfleet.queues.sqs import BACKSTOP_RECEIVES, MAX_ATTEMPTS_TAG, SQSQueue, parse_sqs_url
from taskfleet.tasks import Task


def _name() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


def _open(endpoint: str, name: str, **kwargs: Any) -> SQSQueue:
    q = open_queue(f"sqs://{name}?region=us-east-1&endpoint_url={endpoint}", **kwargs)
    assert isinstance(q, SQSQueue)
    return q


def _count_calls(q: SQSQueue) -> Counter[str]:
    """Count API calls with a botocore event hook, by operation name."""
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    q.client.meta.events.register("before-call.sqs.*", hook)
    return calls


def test_url_options() -> None:
    assert parse_sqs_url("sqs://job?region=eu-west-1&endpoint_url=http://h:1&max_attempts=4") == (
        "job",
        {"region": "eu-west-1", "endpoint_url": "http://h:1"},
        4,
    )
    assert parse_sqs_url("sqs://job.fifo")[0] == "job.fifo"
    with pytest.raises(QueueURLError, match="unknown option"):
        parse_sqs_url("sqs://job?regoin=x")
    with pytest.raises(QueueURLError, match="80 characters"):
        parse_sqs_url("sqs://" + "a" * 78)
    with pytest.raises(QueueURLError, match="letters"):
        parse_sqs_url("sqs://bad.name")


def test_event_queue_url() -> None:
    assert event_queue_url("sqs://job?region=r&max_attempts=2") == "sqs://job-events?region=r"
    assert event_queue_url("sqs://job.fifo?region=r") == "sqs://job-events?region=r"


def test_loading_creates_the_queue_and_its_dead_letter_queue(sqs_endpoint: str) -> None:
    name = _name()
    q = _open(sqs_endpoint, name, max_attempts=4)
    client = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    dlq_url = client.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes = client.get_queue_attributes(QueueUrl=q.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    policy = json.loads(attributes["RedrivePolicy"])
    # SQS's own redrive is a backstop a few receives above the attempts receive enforces
    assert policy == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 4 + BACKSTOP_RECEIVES}
    assert client.list_queue_tags(QueueUrl=q.queue_url)["Tags"] == {MAX_ATTEMPTS_TAG: "4"}
    assert _open(sqs_endpoint, name, max_attempts=9).max_attempts == 4


def test_a_queue_made_before_the_tag_keeps_its_redrive_policy(sqs_endpoint: str) -> None:
    """A queue with a redrive policy but no tag (an older taskfleet, or made by hand): its
    maxReceiveCount is its max_attempts, and nothing about it is changed."""
    name = _name()
    client = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    queue_url = client.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})[
        "QueueUrl"
    ]
    q = _open(sqs_endpoint, name, max_attempts=5)
    assert q.max_attempts == 2
    assert q.dlq_url == dlq_url
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    assert json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 2
    assert client.list_queue_tags(QueueUrl=queue_url).get("Tags", {}) == {}


def test_a_queue_without_a_redrive_policy_gets_ours_and_the_tag(sqs_endpoint: str) -> None:
    name = _name()
    client = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    queue_url = client.create_queue(QueueName=name)["QueueUrl"]
    q = _open(sqs_endpoint, name, max_attempts=2)
    assert q.max_attempts == 2
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert policy["maxReceiveCount"] == 2 + BACKSTOP_RECEIVES
    assert client.list_queue_tags(QueueUrl=queue_url)["Tags"] == {MAX_ATTEMPTS_TAG: "2"}
    assert _open(sqs_endpoint, name).max_attempts == 2


def test_receive_moves_spent_tasks_in_one_batch_each_way(sqs_endpoint: str) -> None:
    """Tasks whose last lease expired go to the dead-letter queue with their attempts and
    error, with one SendMessageBatch there and one DeleteMessageBatch here."""
    q = _open(sqs_endpoint, _name(), max_attempts=1)
    q.send(Task(f"x{i}", {"i": i}) for i in range(4))
    assert len(q.receive(10, 1)) == 4
    time.sleep(1.3)
    calls = _count_calls(q)
    found = q.receive(10, 1)
    assert list(found) == []
    assert sorted(d.task.id for d in found.dead_lettered) == ["x0", "x1", "x2", "x3"]
    assert calls == Counter(ReceiveMessage=1, SendMessageBatch=1, DeleteMessageBatch=1)
    letters = sorted(q.dead_letters(), key=lambda d: d.task.id)
    assert [(d.task.id, d.attempts) for d in letters] == [(f"x{i}", 1) for i in range(4)]
    assert all((d.error or "").startswith("lease expired on attempt 1 of 1") for d in letters)


def test_fifo_queue_dedupes_by_task_id(sqs_endpoint: str) -> None:
    name = _name()
    q = _open(sqs_endpoint, f"{name}.fifo")
    assert q.fifo
    assert q.dlq_name == f"{name}-dlq.fifo"
    sent: list[dict[str, Any]] = []
    original = q.client.send_message_batch

    def spy(**kwargs: Any) -> Any:
        sent.extend(kwargs["Entries"])
        return original(**kwargs)

    q.client.send_message_batch = spy  # type: ignore[method-assign]
    q.send([Task("a", {}), Task("a", {}), Task("é" * 3, {})])
    assert [e["MessageDeduplicationId"] for e in sent][:2] == ["a", "a"]
    assert sent[2]["MessageDeduplicationId"].startswith("sha256-")  # not ASCII: a digest
    assert len(q.receive(10, 30)) == 2


def test_a_task_too_large_for_sqs_is_refused_by_name_before_sending(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())
    small = [Task(f"s{i}", {}) for i in range(3)]
    big = Task("huge-one", {"blob": "x" * (256 * 1024)})
    with pytest.raises(SendInterrupted) as info:
        q.send([*small, big])
    assert isinstance(info.value.cause, MessageTooLargeError)
    assert "'huge-one'" in str(info.value) and "256 KiB" in str(info.value)
    assert info.value.inserted == 3
    assert sorted(m.task_id for m in q.receive(10, 30)) == ["s0", "s1", "s2"]


def test_batches_respect_the_total_size_limit(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())
    calls = _count_calls(q)
    tasks = [Task(f"m{i}", {"blob": "y" * 100_000}) for i in range(5)]
    assert q.send(tasks).inserted == 5
    assert calls["SendMessageBatch"] == 3  # 2 + 2 + 1: a batch holds at most 256 KiB


def test_failed_entries_are_retried_and_only_successes_count(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())
    original = q.client.send_message_batch
    failures = {"left": 2}

    def flaky(**kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        if failures["left"] > 0 and len(entries) > 3:  # SQS failed the last 3 entries
            failures["left"] -= 1
            response = original(**{**kwargs, "Entries": entries[:-3]})
            response["Failed"] = [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"}
                for e in entries[-3:]
            ]
            return response
        return original(**kwargs)

    q.client.send_message_batch = flaky  # type: ignore[method-assign]
    result = q.send(Task(f"f{i}", {}) for i in range(10))
    assert result.inserted == 10
    got = []
    while batch := q.receive(10, 30):
        got.extend(batch)
    assert sorted(m.task_id for m in got) == sorted(f"f{i}" for i in range(10))


def test_entries_refused_for_good_are_an_error_naming_a_task(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())

    def refuse(**kwargs: Any) -> Any:
        return {
            "Successful": [],
            "Failed": [
                {
                    "Id": e["Id"],
                    "SenderFault": True,
                    "Code": "InvalidMessageContents",
                    "Message": "no",
                }
                for e in kwargs["Entries"]
            ],
        }

    q.client.send_message_batch = refuse  # type: ignore[method-assign]
    with pytest.raises(SendInterrupted, match=r"'bad'.*InvalidMessageContents") as info:
        q.send([Task("bad", {})])
    assert isinstance(info.value.cause, QueueConnectionError)
    assert info.value.inserted == 0


def test_characters_sqs_refuses_are_escaped(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())
    q.send([Task("odd", {"s": "a\uffffb\ufffe"})])
    (m,) = q.receive(1, 30)
    assert m.task.data == {"s": "a\uffffb\ufffe"}


def test_api_calls_per_task_are_batched(sqs_endpoint: str) -> None:
    """Load and drain 500 tasks: 10 per send, receive and delete call."""
    q = _open(sqs_endpoint, _name())
    calls = _count_calls(q)
    q.send(Task(f"c{i}", {}) for i in range(500))
    while batch := q.receive(10, 30):
        q.ack(batch)
    total = sum(calls.values())
    assert total / 500 <= 0.32, calls


def test_unreachable_endpoint_is_a_clear_error_without_secrets() -> None:
    with pytest.raises(QueueConnectionError) as info:
        open_queue("sqs://job?region=us-east-1&endpoint_url=http://user:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_repr_hides_secrets(sqs_endpoint: str) -> None:
    q = _open(sqs_endpoint, _name())
    q.url += "&token=abc"
    assert "abc" not in repr(q)
