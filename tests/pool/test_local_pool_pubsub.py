"""The whole pool on a queue that cannot count its tasks: the `local` provider's instances
drain a Pub/Sub queue on Google's emulator, whose `stats` says unknown rather than 0.

`taskfleet run` takes the tasks left from the job's events (loaded minus completed minus
dead-lettered); `pool start --watch-events` has no count and ends the job once every worker
stopped idle. Both drain the queue, start what the limits allow, and leave nothing running;
`pool start` without the events refuses in one line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from test_local_pool import WORKER, _check_results, _env, _records, _taskfleet, _tasks

pytestmark = pytest.mark.slow


def _job(endpoint: str, tmp_path: Path, job_id: str) -> dict:
    return {
        "job_id": job_id,
        "queue": f"pubsub://test-project/{job_id}-{uuid.uuid4().hex[:6]}?endpoint={endpoint}",
        "provider": "local",
        "run": {
            "max_instances": 2,
            "cpus_per_task": 1,
            "scaling_check_interval": 0.5,
            "instance_termination_delay": 2,
            "worker_command": f"python3 {WORKER}",
            "exit_when_idle": 3,
        },
        "local": {"cpus": 2, "state_dir": str(tmp_path / "state")},
    }


def _status(tmp_path: Path, env: dict[str, str], job: Path) -> str:
    status = _taskfleet(tmp_path, env, "pool", "status", "--config", str(job))
    text, _ = status.communicate(timeout=60)
    assert status.returncode == 0, text
    return text


def test_run_counts_the_tasks_left_from_its_events(
    pubsub_endpoint: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    job = write_job(_job(pubsub_endpoint, tmp_path, "ps-run"))
    expected = _tasks(tmp_path / "tasks.json", 300)
    env = _env(tmp_path, delay=0.01)
    manager = _taskfleet(tmp_path, env, "run", "--config", str(job), "--task-file", "tasks.json")
    output, _ = manager.communicate(timeout=300)
    assert manager.returncode == 0, output
    assert "300 remaining" in output  # the plan: the count of what run loads
    _check_results(tmp_path / "results", expected)
    assert "Not completed: 0" in output
    # ended by the count from the events, not by the idle stops
    assert "queue empty for" in output and "every worker idle" not in output
    assert _records(tmp_path / "state" / "ps-run") == {}
    text = _status(tmp_path, env, job)
    assert "job ps-run: 0 machines running" in text
    assert "tasks remaining unknown (the queue cannot count them)" in text


def test_pool_start_ends_once_every_worker_stopped_idle(
    pubsub_endpoint: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    spec = _job(pubsub_endpoint, tmp_path, "ps-start")
    job = write_job(spec)
    expected = _tasks(tmp_path / "tasks.json", 300)
    env = _env(tmp_path, delay=0.01)
    refused = _taskfleet(tmp_path, env, "pool", "start", "--config", str(job), "--yes")
    text, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1, text
    assert "cannot count its tasks" in text and "--watch-events" in text
    assert "Traceback" not in text and not (tmp_path / "state" / "ps-start").exists()
    loader = _taskfleet(
        tmp_path, env, "load-queue", "--queue", spec["queue"], "--task-file", "tasks.json"
    )
    loaded, _ = loader.communicate(timeout=120)
    assert loader.returncode == 0, loaded
    manager = _taskfleet(
        tmp_path,
        env,
        "pool",
        "start",
        "--config",
        str(job),
        "--yes",
        "--watch-events",
        "events.jsonl",
    )
    output, _ = manager.communicate(timeout=300)
    assert manager.returncode == 0, output
    assert "unknown (the queue cannot count its tasks)" in output  # the plan
    assert "every worker idle for" in output
    _check_results(tmp_path / "results", expected)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    stops = [e for e in events if e["event_type"] == "worker_stopped"]
    assert stops and {e.get("reason") for e in stops} == {"idle"}
    assert {e["task_id"] for e in events if e["event_type"] == "task_completed"} == set(expected)
    assert _records(tmp_path / "state" / "ps-start") == {}
    assert "job ps-start: 0 machines running" in _status(tmp_path, env, job)
