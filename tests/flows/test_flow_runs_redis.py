"""Flows run end to end by real worker processes on a real redis-server: the Redis queue keeps
the dependency state, so workers on different hosts (here: processes) need nothing else.

The helpers and the checks are those of test_flow_runs.py: every task ran after its
dependencies completed, with their results, and (unless a kill made a rerun necessary) once.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.flows.test_flow_runs import (
    check_flow,
    completions,
    diamond,
    fan,
    run,
    start,
    starts,
    write,
)
from tests.worker.helpers import read_events

from helpers_taskfiles import run_taskfleet


@pytest.fixture
def url(redis_url: str) -> str:
    """A queue of its own on the session's redis-server (tests/conftest.py)."""
    return f"{redis_url}/0?name=flow{uuid.uuid4().hex[:8]}"


def load(url: str, path: Path) -> None:
    loaded = run_taskfleet("load-queue", "--queue", url, "--task-file", str(path))
    assert loaded.returncode == 0, loaded.stderr


def worker_args(url: str, events: str, *more: str) -> tuple[str, ...]:
    return ("--queue", url, "--event-log-file", events, "--event-queue", "none", *more)


@pytest.mark.parametrize("shape", [diamond, fan], ids=["diamond", "fan-out-fan-in"])
def test_two_workers_share_a_redis_queue_and_run_each_task_once(
    tmp_path: Path, url: str, shape: Any
) -> None:
    tasks = shape()
    load(url, write(tmp_path / "tasks.json", tasks))
    workers = [
        start(
            tmp_path,
            *worker_args(url, f"events-{i}.jsonl"),
            "--num-simultaneous-tasks",
            "2",
            "--exit-when-idle",
            "2",
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    events = read_events(tmp_path / "events-0.jsonl") + read_events(tmp_path / "events-1.jsonl")
    check_flow(tasks, tmp_path, events)
    status = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert (status["completed"], status["waiting"], status["blocked"]) == (len(tasks), 0, 0)


def test_a_dead_lettered_dependency_blocks_until_redriven_on_redis(
    tmp_path: Path, url: str
) -> None:
    tasks = [*diamond(), {"id": "e", "data": {"n": 5}, "after": ["d"]}]
    tasks[1]["data"]["fail_unless"] = str(tmp_path / "fixed")  # b fails until the fix
    load(url, write(tmp_path / "tasks.json", tasks))
    args = worker_args(url, "events.jsonl", "--exit-when-idle", "1")
    failed = run(tmp_path, *args)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    events = read_events(tmp_path / "events.jsonl")
    blocked = {e["task_id"]: e["blocked_by"] for e in events if e["event_type"] == "task_blocked"}
    assert blocked == {"d": "b", "e": "b"}
    assert set(completions(events)) == {"a", "c"}
    counts = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert (counts["dead"], counts["waiting"], counts["blocked"]) == (1, 2, 2)

    (tmp_path / "fixed").touch()
    assert run_taskfleet("redrive", "--queue", url).returncode == 0
    rerun = run(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    check_flow(tasks, tmp_path, read_events(tmp_path / "events.jsonl"), once=False)
    assert Counter(task_id for task_id, _ in starts(tmp_path)) == {
        "a": 1,
        "b": 2,
        "c": 1,
        "d": 1,
        "e": 1,
    }
    counts = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert (counts["dead"], counts["waiting"], counts["blocked"]) == (0, 0, 0)


def test_kill_9_of_a_worker_mid_flow_then_another_finishes_it(tmp_path: Path, url: str) -> None:
    tasks = fan(groups=2, width=10, sleep=0.3)
    load(url, write(tmp_path / "tasks.json", tasks))
    args = worker_args(url, "events.jsonl", "--num-simultaneous-tasks", "3", "--lease-seconds", "2")
    worker = start(tmp_path, *args, "--exit-when-idle", "30")
    deadline = time.monotonic() + 60
    while len(completions(read_events(tmp_path / "events.jsonl"))) < 6:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the flow did not get going"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=30)
    done_before = set(completions(read_events(tmp_path / "events.jsonl")))
    assert not {"g0-aggregate", "g1-aggregate"} <= done_before, "killed too late to tell"

    # The killed worker's leases expire (2 s) and its tasks go to the next one.
    rerun = run(tmp_path, *args, "--exit-when-idle", "3")
    assert rerun.returncode == 0, rerun.stderr
    check_flow(tasks, tmp_path, read_events(tmp_path / "events.jsonl"), once=False)
    runs = Counter(task_id for task_id, _ in starts(tmp_path))
    assert runs["g0-aggregate"] == 1 and runs["g1-aggregate"] == 1
    for task_id in done_before:  # what completed before the kill is not run again
        assert runs[task_id] == 1, task_id
    counts = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert (counts["completed"], counts["waiting"], counts["remaining"]) == (len(tasks), 0, 0)
