"""A worker that leaves dead letters prints the commands that list and redrive them, whole:
`taskfleet dead-letters --queue URL`, with the URL of the queue it drained (password hidden),
for every backend a worker drains."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest
from tests.worker.helpers import run_worker

from taskfleet.queues import open_queue
from taskfleet.redact import redact
from taskfleet.tasks import Task


@pytest.fixture(params=["sqlite", "redis", "sqs", "sqs-fifo"])
def drained_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"hint{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_url')}/0?name={name}"
    endpoint = request.getfixturevalue("sqs_endpoint")
    suffix = ".fifo" if request.param == "sqs-fifo" else ""
    return f"sqs://{name}{suffix}?region=us-east-1&endpoint_url={endpoint}"


def test_the_dead_letter_hint_gives_the_whole_command(drained_url: str, tmp_path: Path) -> None:
    url = drained_url + ("&" if "?" in drained_url else "?") + "max_attempts=1"
    with open_queue(url) as queue:
        queue.send([Task("bad", {"action": "raise"}), Task("good", {"action": "ok"})])
    result = run_worker(
        tmp_path, "--queue", url, "--exit-when-idle", "1", "--num-simultaneous-tasks", "1"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    where = f"--queue {shlex.quote(redact(url))}"
    assert f"`taskfleet dead-letters {where}`" in result.stderr, result.stderr
    assert f"`taskfleet redrive {where}`" in result.stderr, result.stderr
