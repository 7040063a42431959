"""The redrive after a fix, end to end on every backend: a broken task is loaded, a worker
dead-letters it, the task file is fixed, `taskfleet load-queue --update` gives the dead letter
the file's data, `taskfleet redrive` puts it back, and a worker completes it with the new data.

SQLite, fq, Redis, SQS and Pub/Sub run the real commands in processes of their own, against
real servers; a memory queue lives in one process, so there the same steps go through the
Python API (`load_tasks_into(..., update=True)`, what `load-queue --update` calls) and a
worker in the test's process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.worker.helpers import BEHAVIOUR_WORKER, read_events, run_worker, worker_env

from taskfleet import Worker
from taskfleet.queues import open_queue
from taskfleet.tasks.loading import load_tasks_into

BROKEN = [
    {"id": "good", "data": {"action": "ok"}},
    {"id": "bad", "data": {"action": "raise", "marker": "v1"}},
]
FIXED = [BROKEN[0], {"id": "bad", "data": {"action": "ok", "marker": "v2"}}]


@pytest.fixture(params=["sqlite", "fq", "redis", "sqs", "sqs-fifo", "pubsub"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"fix{uuid.uuid4().hex[:8]}"
    kind = request.param
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db?max_attempts=1"
    if kind == "fq":
        return f"fq://{tmp_path}/{name}?max_attempts=1"
    if kind == "redis":
        return f"{request.getfixturevalue('redis_url')}/0?name={name}&max_attempts=1"
    if kind == "pubsub":
        host = request.getfixturevalue("pubsub_endpoint")
        return f"pubsub://test-project/{name}?endpoint={host}&max_attempts=1"
    endpoint = request.getfixturevalue("sqs_endpoint")
    suffix = ".fifo" if kind == "sqs-fifo" else ""
    return f"sqs://{name}{suffix}?region=us-east-1&endpoint_url={endpoint}&max_attempts=1"


def _taskfleet(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=120,
    )


def _write(path: Path, tasks: list[dict]) -> None:
    path.write_text(json.dumps(tasks))


def _drain(cwd: Path, url: str, events: str) -> subprocess.CompletedProcess[str]:
    return run_worker(
        cwd,
        "--queue",
        url,
        "--exit-when-idle",
        "2",
        "--event-log-file",
        events,
        "--event-queue",
        "none",
    )


def test_redrive_after_load_queue_update_runs_the_fixed_data(
    queue_url: str, tmp_path: Path
) -> None:
    _write(tmp_path / "tasks.json", BROKEN)
    loaded = _taskfleet(tmp_path, "load-queue", "--queue", queue_url, "--task-file", "tasks.json")
    assert loaded.returncode == 0, loaded.stderr

    first = _drain(tmp_path, queue_url, "first.jsonl")
    assert first.returncode == 2, first.stdout + first.stderr  # "bad" is a dead letter
    assert "--task-file FILE --update` first" in first.stderr, first.stderr
    listed = _taskfleet(tmp_path, "dead-letters", "--queue", queue_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"raise"' in listed.stdout

    _write(tmp_path / "tasks.json", FIXED)
    update = _taskfleet(
        tmp_path, "load-queue", "--queue", queue_url, "--task-file", "tasks.json", "--update"
    )
    assert update.returncode == 0, update.stderr
    assert "1 dead letters (`taskfleet redrive` runs them with it)" in update.stdout, update.stdout
    if queue_url.startswith(("sqs", "pubsub")):
        assert "not sent: 1 task of the file that are not dead letters" in update.stdout
    else:
        assert "inserted 0, already present 2" in update.stdout
    if queue_url.startswith(("redis", "fq")):
        assert "not compared: 1 completed task" in update.stdout

    redrive = _taskfleet(tmp_path, "redrive", "--queue", queue_url)
    assert redrive.returncode == 0, redrive.stderr
    second = _drain(tmp_path, queue_url, "second.jsonl")
    assert second.returncode == 0, second.stdout + second.stderr
    completed = [
        e["task_id"]
        for e in read_events(tmp_path / "second.jsonl")
        if e["event_type"] == "task_completed"
    ]
    assert completed == ["bad"]


def test_on_a_memory_queue_the_python_api_does_the_same(tmp_path: Path) -> None:
    sys.path.insert(0, str(BEHAVIOUR_WORKER.parent))
    try:
        from behaviour_worker import process_task
    finally:
        sys.path.pop(0)
    url = f"memory://fix{uuid.uuid4().hex[:8]}"
    queue = open_queue(url, max_attempts=1)
    _write(tmp_path / "tasks.json", BROKEN)
    load_tasks_into(queue, tmp_path / "tasks.json")

    def drain(events: str) -> int:
        args = ["--queue", url, "--exit-when-idle", "0", "--event-queue", "none"]
        worker = Worker(process_task, args=args, event_log_file=str(tmp_path / events))
        return worker.run(exit=False).exit_code

    assert drain("first.jsonl") == 2
    _write(tmp_path / "tasks.json", FIXED)
    result = load_tasks_into(queue, tmp_path / "tasks.json", update=True)
    assert (result.changes.dead_updated, result.changes.completed_unknown) == (1, 1)
    assert queue.redrive() == 1
    assert drain("second.jsonl") == 0
    events = read_events(tmp_path / "second.jsonl")
    assert [e["task_id"] for e in events if e["event_type"] == "task_completed"] == ["bad"]
