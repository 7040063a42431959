"""Silent machines found from their queue traffic, without events: `pool start` (no
`--watch-events`) on a Redis queue, `local` instances running the parallel-addition worker.
One instance's worker is stopped with SIGSTOP, a machine that hangs without dying: it keeps
its connection, so nothing but its activity tells; the manager terminates it as silent after
`silent_after` and starts a replacement. Then SIGTERM stops the manager, which terminates the
rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskfleet.pool.providers.local import process_start_ticks
from taskfleet.queues import open_queue
from taskfleet.tasks import Task

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "parallel_addition" / "worker_addition.py"


def _records(state: Path) -> dict[str, dict]:
    import json

    found = {}
    for path in state.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[record["name"]] = record
    return found


def _alive(record: dict) -> bool:
    return process_start_ticks(record["pid"]) == record["start_ticks"]


def test_a_hung_machine_is_replaced_from_its_queue_activity_alone(
    redis_url: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    job_id = "hung"
    url = f"{redis_url}/0?name={job_id}"
    queue = open_queue(url)
    queue.send([Task(f"t{i:04d}", {"num1": i, "num2": 2}) for i in range(3000)])
    job = write_job(
        {
            "job_id": job_id,
            "queue": url,
            "provider": "local",
            "run": {
                "max_instances": 2,
                "scaling_check_interval": 0.5,
                "instance_termination_delay": 2,
                "silent_after": 8,
                "worker_command": f"python3 {WORKER}",
                "lease_seconds": 5,
            },
            "local": {"cpus": 1, "state_dir": str(tmp_path / "state")},
        }
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env.update(
        PYTHONPATH=str(REPO / "src"),
        ADDITION_TASK_DELAY="0.2",
        ADDITION_OUTPUT_DIR=str(tmp_path / "results"),
    )
    log = tmp_path / "manager.log"
    command = ["pool", "start", "--config", str(job), "--yes"]
    with log.open("w") as out:
        manager = subprocess.Popen(
            [sys.executable, "-c", "from taskfleet.cli import main; main()", *command],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    state = tmp_path / "state" / job_id

    def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or manager.poll() is not None:
                manager.kill()
                manager.wait()
                raise AssertionError(f"no {what}; the manager said:\n{log.read_text()}")
            time.sleep(0.2)

    try:
        # both machines' workers are on the queue (their connections carry their names)
        wait(
            lambda: (
                len(_records(state)) >= 2 and set(_records(state)) <= set(queue.consumer_activity())
            ),
            90,
            "two workers on the queue",
        )
        victim = sorted(_records(state).values(), key=lambda r: r["name"])[0]
        os.kill(victim["pid"], signal.SIGSTOP)  # hung: alive, connected, silent
        wait(
            lambda: f"terminating {victim['name']}: silent" in log.read_text(),
            60,
            "silent termination",
        )
        wait(lambda: not _alive(victim), 30, "end of the hung machine")
        wait(
            lambda: len(set(_records(state)) - {victim["name"]}) >= 2,
            60,
            "replacement",
        )
    finally:
        if manager.poll() is None:
            manager.send_signal(signal.SIGTERM)
            try:
                manager.wait(timeout=60)
            except subprocess.TimeoutExpired:
                manager.kill()
                manager.wait()
        with_pids = list(_records(state).values())
        for record in with_pids:
            if _alive(record):
                os.killpg(record["pid"], signal.SIGKILL)
        queue.purge()
        queue.close()
    assert manager.returncode == 130, log.read_text()
    assert not [r["name"] for r in with_pids if _alive(r)]
