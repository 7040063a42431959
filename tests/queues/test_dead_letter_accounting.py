"""A worker dies holding tasks on their last attempt: the next worker accounts for them.

Two tasks are loaded with `max_attempts` 1. A first worker leases both, and one of them SIGKILLs
its supervisor, as when a machine vanishes. Once the leases have expired, the queue's next
`receive` (in a second worker) moves both to the dead letters itself. The second worker must
record that: a `task_dead_lettered` event per task, "2 dead-lettered" in its summary line, exit
code 2; and `taskfleet monitor` on its events must agree with `taskfleet status` on 2 dead.
Run on real workers against every kind of backend.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.worker.helpers import BEHAVIOUR_WORKER, read_events, worker_env

from taskfleet.queues import open_queue
from taskfleet.tasks import Task

if TYPE_CHECKING:
    from conftest import Backend

pytestmark = pytest.mark.slow

LEASE_SECONDS = 1
TASK_IDS = ("dies-1", "dies-2")
CLI = [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def run_worker(
    url: str, workdir: Path, events: str, *args: str
) -> subprocess.CompletedProcess[str]:
    markers = workdir / "markers"
    markers.mkdir(exist_ok=True)
    return subprocess.run(
        [
            sys.executable, str(BEHAVIOUR_WORKER), "--queue", url,
            "--num-simultaneous-tasks", "2", "--event-log-file", events, *args,
        ],
        cwd=workdir, env=worker_env(BEHAVIOUR_MARKERS=str(markers)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def cli_json(*args: str, cwd: Path) -> dict:
    proc = subprocess.run(
        [*CLI, *args], cwd=cwd, env=worker_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "sqs"], indirect=True)
def test_spent_expired_leases_are_dead_lettered_recorded_and_counted(
    backend: Backend, tmp_path: Path
) -> None:
    url = backend.url_for(f"dla{uuid.uuid4().hex[:10]}")
    queue = open_queue(url, max_attempts=1)
    data = {"action": "kill_supervisor", "wait_for": len(TASK_IDS)}
    assert queue.send([Task(task_id, data) for task_id in TASK_IDS]).inserted == 2
    queue.close()

    first = run_worker(url, tmp_path, "events-first.jsonl", "--lease-seconds", str(LEASE_SECONDS))
    assert first.returncode == -9, "the task did not kill its supervisor: " + first.stderr
    time.sleep(dataclasses.replace(backend, lease=LEASE_SECONDS).past_lease())

    second = run_worker(url, tmp_path, "events.jsonl", "--exit-when-idle", "1")
    assert "Traceback" not in second.stderr, second.stderr
    assert second.returncode == 2, second.stdout + second.stderr
    assert "; 2 dead-lettered;" in second.stdout, second.stdout

    events = read_events(tmp_path / "events.jsonl")
    dead = [e for e in events if e["event_type"] == "task_dead_lettered"]
    assert sorted(e["task_id"] for e in dead) == sorted(TASK_IDS)
    assert all(e["attempt"] == 1 for e in dead)

    monitor = cli_json("monitor", "--json", "events.jsonl", cwd=tmp_path)
    status = cli_json("status", "--queue", url, "--json", cwd=tmp_path)
    assert monitor["dead_letters"] == status["dead"] == 2, (monitor, status)
