"""Only loading creates a queue; opening one to read or drain it never creates or changes it.

A mistyped queue must not become a new, empty queue that a worker drains in no time (exit 0,
nothing done), that `monitor` watches forever, or that `status` answers "0 tasks" for (and on
SQS creates, with a dead-letter queue). So on every backend `open_queue(url, create=False)`, and
every command but `load-queue`, stop on a queue that does not exist with one line that names it
and, where the backend can list its queues, the nearest existing names.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from tests.helpers_taskfiles import assert_user_error, run_taskfleet
from tests.worker.helpers import run_worker

from taskfleet.queues import QueueNotFoundError, open_queue
from taskfleet.tasks import Task

if TYPE_CHECKING:  # tests/queues/conftest.py: `conftest` alone is ambiguous beside others
    from conftest import Backend

READING_COMMANDS = ["status", "dead-letters", "redrive", "release-all", "purge"]


def _sqs_names(endpoint: str) -> list[str]:
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    urls = client.list_queues(MaxResults=1000).get("QueueUrls", [])
    return [url.rsplit("/", 1)[-1] for url in urls]


def _stem() -> str:
    return f"jobs{uuid.uuid4().hex[:6]}"


def test_a_missing_queue_is_named_with_the_nearest_existing_one(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    stem = _stem()
    with open_queue(backend.url_for(f"{stem}-alpha")) as queue:
        queue.send([Task("t1", {})])
    typo = backend.url_for(f"{stem}-alhpa")
    for _ in range(2):  # the first refusal created nothing: the second one refuses the same
        with pytest.raises(QueueNotFoundError) as refused:
            open_queue(typo, create=False)
        message = str(refused.value)
        assert f"{stem}-alhpa" in message and "\n" not in message, message
        if backend.name != "memory":
            assert f"did you mean '{stem}-alpha" in message, message
    if backend.name.startswith("sqs"):
        endpoint = request.getfixturevalue("sqs_endpoint")
        assert not [n for n in _sqs_names(endpoint) if n.startswith(f"{stem}-alhpa")]


def test_opening_an_existing_queue_keeps_its_max_attempts(backend: Backend) -> None:
    url = backend.url_for(_stem())
    with open_queue(url, max_attempts=5) as queue:
        queue.send([Task("t1", {})])
    with open_queue(url, create=False, max_attempts=2) as queue:
        assert queue.max_attempts == 5
        # the task is still there (Pub/Sub counts nothing: there it is leased to be seen)
        received = queue.receive(10, 60, wait_seconds=10)
        assert [m.task.id for m in received] == ["t1"]


def test_status_of_a_hand_made_sqs_queue_changes_nothing(sqs_endpoint: str) -> None:
    """`taskfleet status` used to give a queue made by hand a dead-letter queue and a redrive
    policy: reading a queue must not change it."""
    name = _stem()
    client = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    queue_url = client.create_queue(QueueName=name)["QueueUrl"]
    client.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": "t1", "data": {}}))
    url = f"sqs://{name}?region=us-east-1&endpoint_url={sqs_endpoint}"
    for command in ("status", "dead-letters"):
        result = run_taskfleet(command, "--queue", url)
        assert result.returncode == 0, result.stderr
    assert [n for n in _sqs_names(sqs_endpoint) if n.startswith(name)] == [name]
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert "RedrivePolicy" not in attributes["Attributes"]
    assert client.list_queue_tags(QueueUrl=queue_url).get("Tags", {}) == {}
    # a task dead-lettered later gets the dead-letter queue then
    with open_queue(url, create=False, max_attempts=1) as queue:
        (message,) = queue.receive(1, 30)
        queue.dead_letter(message, "boom")
        assert [letter.task.id for letter in queue.dead_letters()] == ["t1"]
        assert queue.stats().dead == 1


@pytest.fixture(params=["sqlite", "fq", "redis", "sqs"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(URL of an existing queue, URL of a mistyped one, the mistyped name)."""
    stem = _stem()
    if request.param == "sqlite":
        existing = f"sqlite:///{tmp_path}/{stem}.db"
        typo = f"sqlite:///{tmp_path}/{stem}x.db"
        shown = f"{stem}x.db"
    elif request.param == "fq":
        existing, typo, shown = f"fq://{tmp_path}/{stem}", f"fq://{tmp_path}/{stem}x", f"{stem}x"
    elif request.param == "redis":
        base = request.getfixturevalue("redis_url")
        existing, typo, shown = f"{base}/0?name={stem}", f"{base}/0?name={stem}x", f"{stem}x"
    else:
        endpoint = request.getfixturevalue("sqs_endpoint")
        options = f"region=us-east-1&endpoint_url={endpoint}"
        existing, typo, shown = f"sqs://{stem}?{options}", f"sqs://{stem}x?{options}", f"{stem}x"
    with open_queue(existing) as queue:
        queue.send([Task("t1", {})])
    return existing, typo, shown


def _assert_nothing_created(typo: str) -> None:
    with pytest.raises(QueueNotFoundError):
        open_queue(typo, create=False)


@pytest.mark.parametrize("command", READING_COMMANDS)
def test_commands_refuse_a_missing_queue_and_create_nothing(
    remote_url: tuple[str, str, str], command: str
) -> None:
    _, typo, shown = remote_url
    extra = ["--yes"] if command == "purge" else []
    result = run_taskfleet(command, "--queue", typo, *extra)
    assert_user_error(result, shown, "did you mean", "only loading creates a queue")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    _assert_nothing_created(typo)


def test_a_worker_on_a_missing_queue_stops_with_one_line(
    remote_url: tuple[str, str, str], tmp_path: Path
) -> None:
    existing, typo, shown = remote_url
    result = run_worker(tmp_path, "--queue", typo, "--exit-when-idle", "0.5")
    assert_user_error(result, shown, "did you mean")
    _assert_nothing_created(typo)
    ran = run_worker(tmp_path, "--queue", existing, "--exit-when-idle", "0.5")
    assert ran.returncode == 0 and "completed 1 task" in ran.stdout, ran.stdout + ran.stderr


def test_monitor_on_a_missing_queue_stops_with_one_line(
    remote_url: tuple[str, str, str], tmp_path: Path
) -> None:
    _, typo, shown = remote_url
    out = tmp_path / "events.jsonl"
    result = run_taskfleet("monitor", "--queue", typo, "-o", str(out), "--idle-timeout", "30")
    assert_user_error(result, shown, "did you mean")
    _assert_nothing_created(typo)


def test_a_worker_given_a_task_file_creates_its_queue(
    remote_url: tuple[str, str, str], tmp_path: Path
) -> None:
    """Loading creates: a worker given `--task-file` with `--queue` loads the file into it."""
    _, new, _ = remote_url
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps([{"id": "a", "data": {"action": "ok"}}]))
    result = run_worker(
        tmp_path, "--queue", new, "--task-file", str(task_file), "--exit-when-idle", "0.5"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open_queue(new, create=False) as queue:
        assert queue.stats().remaining == 0
