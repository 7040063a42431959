"""What the contract suite cannot see in the Pub/Sub backend: the URL and the resources opening
creates, the task id attribute, message size, a subscription without delivery numbers, a delay
longer than an ack deadline, exactly-once acks of stale ids, and API calls per task. All against
Google's emulator (the `pubsub_endpoint` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskfleet.errors import MessageTooLargeError, QueueURLError
from taskfleet.queues import QueueNotFoundError, SendInterrupted, event_queue_url, open_queue
from taskfleet.queues.pubsub import (
    ATTEMPTS_ATTRIBUTE,
    MAX_ATTEMPTS_LABEL,
    NOT_BEFORE_ATTRIBUTE,
    TASK_ID_ATTRIBUTE,
    PubSubQueue,
)
from taskfleet.queues.registry import backend_class
from taskfleet.tasks import Task


def _name() -> str:
    return f"p{uuid.uuid4().hex[:12]}"


def _open(endpoint: str, name: str, options: str = "", **kwargs: Any) -> PubSubQueue:
    q = open_queue(f"pubsub://test-project/{name}?endpoint={endpoint}{options}", **kwargs)
    assert isinstance(q, PubSubQueue)
    return q


def _count_calls(q: PubSubQueue) -> Counter[str]:
    """Count the API calls the queue makes, at its clients, by method name."""
    calls: Counter[str] = Counter()

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)

        return call

    for client, names in (
        (q.publisher, ("publish",)),
        (q.subscriber, ("pull", "acknowledge", "modify_ack_deadline")),
    ):
        for name in names:
            setattr(client, name, counted(name, getattr(client, name)))
    return calls


def test_url_names_and_options() -> None:
    address = PubSubQueue.parse_url(
        "pubsub://my-project/job?max_attempts=4&endpoint=h:1&exactly_once=true"
    )
    assert (address.name, address.max_attempts) == ("my-project/job", 4)
    assert address.options == {"endpoint": "h:1", "exactly_once": "true"}
    with pytest.raises(QueueURLError, match="unknown option"):
        PubSubQueue.parse_url("pubsub://my-project/job?region=x")
    for bad in ("pubsub://my-project", "pubsub://my-project/9job", "pubsub://p/goog-job"):
        with pytest.raises(QueueURLError, match="PROJECT/NAME"):
            PubSubQueue.parse_url(bad)
    with pytest.raises(QueueURLError, match="exactly_once must be true or false"):
        open_queue("pubsub://my-project/job?exactly_once=yes")
    assert backend_class("pubsub://my-project/job") is PubSubQueue


def test_event_queue_url_keeps_the_endpoint_not_the_names() -> None:
    url = "pubsub://my-project/job?endpoint=h:1&topic=mine&subscription=mine-sub&max_attempts=2"
    assert event_queue_url(url) == "pubsub://my-project/job-events?endpoint=h%3A1"


def test_loading_creates_the_topics_and_subscriptions(pubsub_endpoint: str) -> None:
    name = _name()
    with pytest.raises(QueueNotFoundError, match=f"{name}-sub"):
        open_queue(f"pubsub://test-project/{name}?endpoint={pubsub_endpoint}", create=False)
    q = _open(pubsub_endpoint, name, max_attempts=2)
    open_queue(q.url, create=False).close()  # exists now: opening it creates nothing
    sub = q.subscriber.get_subscription(subscription=q.subscription)
    assert sub.topic == f"projects/test-project/topics/{name}"
    assert sub.labels[MAX_ATTEMPTS_LABEL] == "2"
    assert sub.dead_letter_policy.dead_letter_topic == f"projects/test-project/topics/{name}-dead"
    assert sub.dead_letter_policy.max_delivery_attempts == 5  # Pub/Sub's least; 2 is ours
    dead = q.subscriber.get_subscription(subscription=q.dead_subscription)
    assert dead.topic == sub.dead_letter_policy.dead_letter_topic
    assert (q.max_attempts, q.delivery_numbers) == (2, True)
    q.close()


def test_opening_without_create_refuses_a_missing_queue_and_names_the_nearest(
    pubsub_endpoint: str,
) -> None:
    name = _name()
    _open(pubsub_endpoint, name).close()
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    url = f"pubsub://test-project/{typo}?endpoint={pubsub_endpoint}"
    address = PubSubQueue.parse_url(url)
    for _ in range(2):  # the first refusal created nothing
        with pytest.raises(QueueNotFoundError, match=f"did you mean '{name}-sub'"):
            PubSubQueue.from_address(address, None, create=False)
    q = PubSubQueue.from_address(PubSubQueue.parse_url(url.replace(typo, name)), None, create=False)
    q.close()


def test_messages_carry_the_task_id_as_an_attribute(pubsub_endpoint: str) -> None:
    q = _open(pubsub_endpoint, _name())
    q.send([Task("the-id", {"a": 1})])
    (raw,) = q._pull(q.subscription, 10, 5)
    assert raw.message.attributes[TASK_ID_ATTRIBUTE] == "the-id"
    q._change(q.subscription, [raw.ack_id], None)
    q.close()


def test_a_task_too_large_is_refused_by_name_before_sending(pubsub_endpoint: str) -> None:
    q = _open(pubsub_endpoint, _name())
    small = [Task(f"s{i}", {}) for i in range(3)]
    big = Task("huge-one", {"blob": "x" * (10 * 1000 * 1000)})
    with pytest.raises(SendInterrupted) as info:
        q.send([*small, big])
    assert isinstance(info.value.cause, MessageTooLargeError)
    assert "'huge-one'" in str(info.value) and "10 MB" in str(info.value)
    assert info.value.inserted == 3
    assert sorted(m.task_id for m in q.receive(10, 30, wait_seconds=5)) == ["s0", "s1", "s2"]
    q.close()


def test_without_delivery_numbers_a_retry_counts_by_a_new_copy(pubsub_endpoint: str) -> None:
    """A subscription the user made without a dead-letter policy: Pub/Sub numbers no
    deliveries, so a retry publishes a copy with the attempt (and due time) in attributes."""
    name = _name()
    setup = _open(pubsub_endpoint, name)
    own = f"{name}-own"
    setup.subscriber.create_subscription(
        request={
            "name": f"projects/test-project/subscriptions/{own}",
            "topic": setup.topic,
            "ack_deadline_seconds": 10,
        }
    )
    q = _open(pubsub_endpoint, name, f"&subscription={own}", max_attempts=2)
    assert not q.delivery_numbers
    q.send([Task("t", {})])
    (first,) = q.receive(1, 30, wait_seconds=5)
    assert first.attempt == 1
    assert q.retry(first, 1.0, "flaky") is True
    assert q.receive(1, 30) == []
    time.sleep(1.3)
    (second,) = q.receive(1, 30, wait_seconds=5)
    assert second.attempt == 2
    assert q.retry(second, 0, "again") is False
    assert [(d.task.id, d.attempts, d.error) for d in q.dead_letters()] == [("t", 2, "again")]
    setup.close()
    q.close()


def test_a_delay_longer_than_an_ack_deadline_is_a_copy_with_its_due_time(
    pubsub_endpoint: str,
) -> None:
    q = _open(pubsub_endpoint, _name())
    q.send([Task("t", {})])
    (m,) = q.receive(1, 30, wait_seconds=5)
    before = time.time()
    assert q.retry(m, 3600, "later") is True
    (raw,) = q._pull(q.subscription, 10, 5)
    attributes = raw.message.attributes
    assert attributes[ATTEMPTS_ATTRIBUTE] == "1"
    assert before + 3600 <= float(attributes[NOT_BEFORE_ATTRIBUTE]) <= time.time() + 3600
    q._change(q.subscription, [raw.ack_id], 0)
    assert q.receive(1, 30) == []  # pulled again, not due: hidden, not leased
    q.close()


def test_a_due_copy_is_published_again_before_it_is_leased(pubsub_endpoint: str) -> None:
    """Where Pub/Sub numbers deliveries, a copy whose due time has come is republished
    without it, so its attempt counts from its attribute and later retries count as usual."""
    q = _open(pubsub_endpoint, _name())
    past = repr(time.time() - 1)
    q._publish(
        q.topic, [q._message(Task("t", {}), {ATTEMPTS_ATTRIBUTE: "1", NOT_BEFORE_ATTRIBUTE: past})]
    )
    (m,) = q.receive(1, 30, wait_seconds=5)
    assert m.attempt == 2
    assert q.retry(m, 1.0) is True
    time.sleep(1.3)
    (again,) = q.receive(1, 30, wait_seconds=5)
    assert again.attempt == 3
    q.ack([again])
    q.close()


def test_exactly_once_skips_ack_ids_that_are_no_longer_valid(pubsub_endpoint: str) -> None:
    q = _open(pubsub_endpoint, _name(), "&exactly_once=true")
    sub = q.subscriber.get_subscription(subscription=q.subscription)
    assert sub.enable_exactly_once_delivery
    q.send([Task("t", {})])
    (m,) = q.receive(1, 30, wait_seconds=5)
    q.ack([m])
    q.ack([m])  # acked already: Pub/Sub refuses the id; the task is settled either way
    q._change(q.subscription, ["not-an-ack-id", m.receipt], None)
    assert q.receive(1, 1) == []
    q.close()


def test_a_delivery_whose_worker_died_before_its_lease_was_set_comes_back_soon(
    pubsub_endpoint: str,
) -> None:
    """`receive` pulls, then sets the lease; a host killed between the two leaves the
    messages of that pull out for the subscription's own ack deadline. That deadline is
    Pub/Sub's shortest (10 s), so they come back to another worker soon, not after the
    runtime's default lease (the killed-host test of test_many_hosts waits 12 s idle)."""
    name = _name()
    dying = _open(pubsub_endpoint, name)
    dying.send([Task("held", {})])
    pulled = time.monotonic()
    assert len(dying._pull(dying.subscription, 1, 5)) == 1  # then the host dies
    dying.close()
    survivor = _open(pubsub_endpoint, name)
    back: list[Any] = []
    while not back and time.monotonic() - pulled < 20:
        back = survivor.receive(1, 3, wait_seconds=1)
    assert [m.task_id for m in back] == ["held"], "still held after 20 s"
    assert time.monotonic() - pulled < survivor.ack_deadline + 5
    assert back[0].attempt == 2
    survivor.ack(back)
    survivor.close()


def test_api_calls_per_task_are_batched(pubsub_endpoint: str) -> None:
    """Load and drain 500 tasks in leases of the subscription's deadline: one publish, then a
    pull and an acknowledge per 100."""
    q = _open(pubsub_endpoint, _name())
    calls = _count_calls(q)
    q.send(Task(f"c{i}", {}) for i in range(500))
    drained = 0
    while batch := q.receive(100, q.ack_deadline, wait_seconds=1):
        q.ack(batch)
        drained += len(batch)
    assert drained == 500
    assert calls["publish"] == 1
    assert calls["modify_ack_deadline"] == 0
    assert sum(calls.values()) / 500 <= 0.1, calls


def test_opening_an_existing_queue_creates_nothing(
    pubsub_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose account may not create topics or subscriptions opens a loaded queue."""
    from google.api_core import exceptions
    from google.pubsub_v1 import PublisherClient, SubscriberClient

    name = _name()
    _open(pubsub_endpoint, name, max_attempts=4).close()

    def refused(*args: Any, **kwargs: Any) -> None:
        raise exceptions.PermissionDenied("pubsub.topics.create denied")

    monkeypatch.setattr(PublisherClient, "create_topic", refused)
    monkeypatch.setattr(SubscriberClient, "create_subscription", refused)
    q = _open(pubsub_endpoint, name)
    assert q.max_attempts == 4
    q.close()


def _taskfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_queue_commands(pubsub_endpoint: str, tmp_path: Path) -> None:
    """load-queue creates the queue; status, dead-letters and redrive work on it."""
    url = f"pubsub://test-project/{_name()}?endpoint={pubsub_endpoint}"
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "data": {"i": i}}) + "\n" for i in range(5)))
    loaded = _taskfleet(
        "load-queue", "--queue", url, "--task-file", str(path), "--max-attempts", "1"
    )
    assert loaded.returncode == 0, loaded.stderr
    with open_queue(url) as q:
        for m in q.receive(2, 30, wait_seconds=5):
            assert q.retry(m, 0, f"boom in {m.task_id}") is False
    status = _taskfleet("status", "--queue", url, "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["dead"], counts["approximate"]) == (2, True)
    # three tasks wait, but Pub/Sub cannot count them: unknown, never 0
    unknown = {k: counts[k] for k in ("visible", "leased", "delayed", "remaining")}
    assert unknown == dict.fromkeys(unknown) and counts["counts_tasks"] is False
    table = _taskfleet("status", "--queue", url)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[1]: line.split()[3] for line in table.stdout.splitlines() if "│" in line}
    assert {rows[k] for k in ("visible", "leased", "delayed", "remaining")} == {"unknown"}
    assert rows["dead"] == "2" and "cannot count its tasks" in table.stdout
    listing = _taskfleet("dead-letters", "--queue", url, "--json")
    letters = sorted(json.loads(line)["id"] for line in listing.stdout.splitlines())
    assert len(letters) == 2, listing.stderr
    redrive = _taskfleet("redrive", "--queue", url)
    assert "redrove 2 tasks" in redrive.stdout, redrive.stderr
    with open_queue(url) as q:
        got = []
        while batch := q.receive(10, 30, wait_seconds=1):
            got.extend(batch)
        assert sorted(m.task_id for m in got) == [f"t{i}" for i in range(5)]
        assert {m.attempt for m in got} == {1}


def test_a_worker_asking_for_longer_leases_holds_and_renews_them_within_600_s(
    pubsub_endpoint: str,
) -> None:
    from taskfleet.events.sinks import open_event_sink
    from taskfleet.worker.attempts import RunCounts
    from taskfleet.worker.leases import Leases
    from taskfleet.worker.outage import Outage
    from taskfleet.worker.run_events import RunEvents

    q = _open(pubsub_endpoint, _name())
    with open_event_sink(None, None) as sink:
        events = RunEvents(sink, "host")
        leases = Leases(q, 3600, RunCounts(), events, Outage(300, events))
        assert leases.seconds == 600
        assert leases.next_renewal - time.monotonic() <= 200
    q.close()


def test_pubsub_away_is_an_outage_the_worker_rides_out(pubsub_endpoint: str) -> None:
    """A Pub/Sub that cannot be reached raises `QueueUnavailableError` (which the worker's
    outage owner rides out), not a plain connection error."""
    import socket

    from taskfleet.errors import QueueUnavailableError
    from taskfleet.queues import pubsub

    q = _open(pubsub_endpoint, _name())
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    pubsub._close_clients(q.publisher, q.subscriber)
    q.publisher, q.subscriber = pubsub._clients(dead)
    try:
        with pytest.raises(QueueUnavailableError, match="unavailable"):
            q.receive(1, 10)
    finally:
        q.close()


def test_a_local_run_on_pubsub_ends_after_its_delayed_retries(
    pubsub_endpoint: str, tmp_path: Path
) -> None:
    """A run given `--task-file` and a Pub/Sub `--queue` loads it and drains it. The queue
    cannot count what is left, so the run ends when nothing is left to lease, nothing runs and
    the tasks it retried with a delay are visible again (never on a made-up 0)."""
    from tests.worker.helpers import run_worker

    url = f"pubsub://test-project/{_name()}?endpoint={pubsub_endpoint}"
    task_file = tmp_path / "tasks.json"
    actions = {"a": "ok", "b": "retry_once", "c": "ok"}
    task_file.write_text(json.dumps([{"id": k, "data": {"action": v}} for k, v in actions.items()]))
    result = run_worker(
        tmp_path,
        "--queue",
        url,
        "--task-file",
        str(task_file),
        "--backoff-base",
        "2",
        "--backoff-cap",
        "2",
        "--event-log-file",
        "events.jsonl",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    done = [e["task_id"] for e in events if e["event_type"] == "task_completed" and not e["retry"]]
    assert sorted(done) == ["a", "b", "c"]
    assert "completed 3 tasks in this run" in result.stdout
