"""The whole pool, for real: the `local` provider's instances are bash processes running the
generated startup script, whose worker (the parallel-addition example) drains a Redis queue.

One job of 2,000 tasks on at most 3 instances: one instance is killed with SIGKILL and
replaced, the queue drains, every result is right, nothing is left running and `pool status`
says so. Then a manager killed with SIGKILL is started again and adopts its instances.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskfleet.pool.providers.local import process_start_ticks

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "parallel_addition" / "worker_addition.py"


def _env(tmp_path: Path, delay: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env["PYTHONPATH"] = str(REPO / "src")
    env["ADDITION_TASK_DELAY"] = str(delay)
    env["ADDITION_OUTPUT_DIR"] = str(tmp_path / "results")
    return env


def _taskfleet(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _job(redis_url: str, tmp_path: Path, job_id: str) -> dict:
    return {
        "job_id": job_id,
        "queue": f"{redis_url}/0?name={job_id}",
        "provider": "local",
        "run": {
            "max_instances": 3,
            "cpus_per_task": 1,
            "scaling_check_interval": 0.5,
            "instance_termination_delay": 2,
            "worker_command": f"python3 {WORKER}",
            "lease_seconds": 5,  # a killed instance's tasks come back soon
        },
        "local": {"cpus": 2, "state_dir": str(tmp_path / "state")},
    }


def _tasks(path: Path, count: int) -> dict[str, int]:
    tasks = [{"id": f"t{i:05d}", "data": {"num1": i * 7, "num2": -i * 3}} for i in range(count)]
    path.write_text(json.dumps(tasks))
    return {t["id"]: t["data"]["num1"] + t["data"]["num2"] for t in tasks}


def _records(state: Path) -> dict[str, dict]:
    found = {}
    for path in state.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[record["name"]] = record
    return found


def _wait(
    condition: Callable[[], bool], timeout: float, what: str, manager: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or manager.poll() is not None:
            manager.kill()
            output, _ = manager.communicate()
            raise AssertionError(f"no {what}; the manager said:\n{output}")
        time.sleep(0.1)


def _check_results(results: Path, expected: dict[str, int]) -> None:
    files = {p.stem: p.read_text() for p in results.glob("*.txt")}
    assert set(files) == set(expected)
    for task_id, total in expected.items():
        assert f"= {total}\n" in files[task_id], task_id


def _alive(record: dict) -> bool:
    return process_start_ticks(record["pid"]) == record["start_ticks"]


def test_run_replaces_a_killed_instance_drains_the_queue_and_leaves_nothing(
    redis_url: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    job = write_job(_job(redis_url, tmp_path, "e2e-run"))
    expected = _tasks(tmp_path / "tasks.json", 2000)
    state = tmp_path / "state" / "e2e-run"
    env = _env(tmp_path, delay=0.03)
    manager = _taskfleet(tmp_path, env, "run", "--config", str(job), "--task-file", "tasks.json")
    seen: dict[str, dict] = {}
    try:

        def three_working() -> bool:
            seen.update(_records(state))
            done = len(list((tmp_path / "results").glob("*.txt")))
            return len(_records(state)) == 3 and done >= 100

        _wait(three_working, 120, "3 instances at work", manager)
        first = _records(state)
        assert len(first) == 3
        victim = next(iter(first.values()))
        os.killpg(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            now = _records(state)
            seen.update(now)
            return len(set(now) - set(first)) >= 1

        _wait(replaced, 60, "replacement instance", manager)
        output, _ = manager.communicate(timeout=300)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 0, output
    assert victim["name"] not in _records(state)
    assert len(seen) >= 4
    _check_results(tmp_path / "results", expected)
    assert "Not completed: 0" in output
    # the manager's events file (drained from the event queue) holds each event once
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    completed = {json.loads(line).get("task_id") for line in lines if "task_completed" in line}
    assert completed == set(expected)
    assert not any(_alive(record) for record in seen.values())
    assert _records(state) == {}
    status = _taskfleet(tmp_path, env, "pool", "status", "--config", str(job))
    text, _ = status.communicate(timeout=60)
    assert status.returncode == 0, text
    assert "job e2e-run: 0 machines running" in text


def test_a_restarted_manager_adopts_the_running_instances(
    redis_url: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    job = write_job(_job(redis_url, tmp_path, "e2e-adopt"))
    expected = _tasks(tmp_path / "tasks.json", 600)
    state = tmp_path / "state" / "e2e-adopt"
    env = _env(tmp_path, delay=0.05)
    queue = f"{redis_url}/0?name=e2e-adopt"
    load = _taskfleet(tmp_path, env, "load-queue", "--queue", queue, "--task-file", "tasks.json")
    assert load.wait(timeout=60) == 0
    first = _taskfleet(tmp_path, env, "pool", "start", "--config", str(job), "--yes")
    try:
        _wait(lambda: len(_records(state)) == 3, 120, "3 instances", first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    instances = _records(state)
    assert all(_alive(record) for record in instances.values())
    second = _taskfleet(tmp_path, env, "pool", "start", "--config", str(job), "--yes")
    try:
        output, _ = second.communicate(timeout=300)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output
    # Every check of the second manager counted the three it found: it started none.
    checks = [line for line in output.splitlines() if "machines:" in line]
    assert checks and "3 running" in checks[0], output
    assert all("0 started by this manager" in line for line in checks), output
    assert not any(_alive(record) for record in instances.values())
    assert _records(state) == {}
    _check_results(tmp_path / "results", expected)


def test_a_manager_told_to_stop_without_a_terminal_stops_every_instance(
    redis_url: str, tmp_path: Path, write_job: Callable[..., Path]
) -> None:
    """SIGTERM (or Ctrl-C with no terminal to ask on) terminates the machines: a pool never
    leaves them running by default."""
    job = write_job(_job(redis_url, tmp_path, "e2e-sigterm"))
    _tasks(tmp_path / "tasks.json", 2000)
    state = tmp_path / "state" / "e2e-sigterm"
    env = _env(tmp_path, delay=0.2)
    queue = f"{redis_url}/0?name=e2e-sigterm"
    load = _taskfleet(tmp_path, env, "load-queue", "--queue", queue, "--task-file", "tasks.json")
    assert load.wait(timeout=60) == 0
    manager = _taskfleet(tmp_path, env, "pool", "start", "--config", str(job), "--yes")
    try:
        _wait(lambda: len(_records(state)) == 3, 120, "3 instances", manager)
        instances = _records(state)
        manager.send_signal(signal.SIGTERM)
        output, _ = manager.communicate(timeout=120)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 130, output
    assert "interrupted: terminating 3 machines" in output
    assert not any(_alive(record) for record in instances.values())
    assert _records(state) == {}
