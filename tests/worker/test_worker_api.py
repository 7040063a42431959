"""The user API: options and their precedence, a user argparser, task factories, asyncio,
and clear errors for bad options and inputs."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.worker.helpers import read_events, run_worker, worker_env, write_tasks

from taskfleet import Worker, WorkerData
from taskfleet.errors import TaskfleetError
from taskfleet.worker.settings import resolve_settings


def add(task_id: str, data: dict[str, Any], worker_data: WorkerData) -> tuple[bool, Any]:
    return False, {
        "sum": data["a"] + data["b"],
        "my_flag": getattr(worker_data.args, "my_flag", None),
        "slots": worker_data.num_simultaneous_tasks,
        "worker_id": worker_data.worker_id,
    }


def test_precedence_cli_then_env_then_config_then_default(tmp_path: Path) -> None:
    config = tmp_path / "worker.yml"
    config.write_text("max-runtime: 30\nnum_simultaneous_tasks: 5\nretry-on-exception: true\n")
    env = {"TASKFLEET_MAX_RUNTIME": "20", "TASKFLEET_SHUTDOWN_GRACE_PERIOD": "7"}
    settings = resolve_settings({"max_runtime": "10", "config": str(config)}, environ=env)
    assert settings.max_runtime == 10  # CLI beats env and config
    assert settings.shutdown_grace_period == 7  # env beats default
    assert settings.num_simultaneous_tasks == 5  # config beats default
    assert settings.retry_on_exception is True
    assert settings.backoff_cap == 300  # default
    settings = resolve_settings({"config": str(config)}, environ=env)
    assert settings.max_runtime == 20  # env beats config


def test_bad_option_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(TaskfleetError, match="TASKFLEET_MAX_RUNTIME"):
        resolve_settings({}, environ={"TASKFLEET_MAX_RUNTIME": "soon"})
    with pytest.raises(TaskfleetError, match="--num-simultaneous-tasks"):
        resolve_settings({"num_simultaneous_tasks": "0"}, environ={})
    config = tmp_path / "c.yml"
    config.write_text("max_runtim: 3\n")
    with pytest.raises(TaskfleetError, match="max_runtim: unknown option"):
        resolve_settings({"config": str(config)}, environ={})


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a/b", "data": {}}])
    proc = run_worker(tmp_path, "--task-file", "tasks.json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "tasks.json: index 0" in proc.stderr and "'/'" in proc.stderr
    proc = run_worker(tmp_path, "--max-runtime", "-1", "--task-file", "tasks.json")
    assert proc.returncode == 1 and "--max-runtime" in proc.stderr
    proc = run_worker(tmp_path)
    assert proc.returncode == 1 and "--task-file" in proc.stderr
    proc = run_worker(tmp_path, "--task-file", "missing.json")
    assert proc.returncode == 1 and "missing.json" in proc.stderr


def test_env_variables_configure_a_run(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "x", "data": {"action": "ok"}}])
    proc = run_worker(
        tmp_path,
        env=worker_env(TASKFLEET_TASK_FILE="tasks.json", TASKFLEET_EVENT_LOG_FILE="custom.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert read_events(tmp_path / "custom.jsonl")


def test_user_argparser_and_task_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    parser.add_argument("--my-flag", default="none")

    def factory() -> list[dict[str, Any]]:
        return [{"id": f"t{i}", "data": {"a": i, "b": 1}} for i in range(10)]

    worker = Worker(
        add,
        args=["--my-flag", "hello", "--num-simultaneous-tasks", "2"],
        argparser=parser,
        task_source=factory,
    )
    summary = worker.run(exit=False)
    assert summary.exit_code == 0 and summary.counts.completed == 10
    done = [
        e for e in read_events(tmp_path / "events.jsonl") if e["event_type"] == "task_completed"
    ]
    assert sorted(e["result"]["sum"] for e in done) == list(range(1, 11))
    assert {e["result"]["my_flag"] for e in done} == {"hello"}
    assert {e["result"]["slots"] for e in done} == {2}
    assert {e["result"]["worker_id"] for e in done} <= {0, 1}


def test_unknown_option_without_user_parser(tmp_path: Path) -> None:
    with pytest.raises(TaskfleetError, match="--bogus"):
        Worker(add, args=["--bogus"]).run(exit=False)


def test_asyncio_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tasks = [{"id": f"t{i}", "data": {"a": i, "b": i}} for i in range(5)]
    worker = Worker(add, args=["--num-simultaneous-tasks", "2"], task_source=tasks)
    summary = asyncio.run(worker.start(exit=False))
    assert summary.counts.completed == 5 and summary.exit_code == 0


def test_queue_mode_exit_when_idle(tmp_path: Path) -> None:
    from taskfleet.queues import open_queue
    from taskfleet.tasks import Task

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_queue(url) as queue:  # type: ignore[attr-defined]
        queue.send([Task(f"q{i}", {"action": "ok"}) for i in range(50)])
    proc = run_worker(tmp_path, "--queue", url, "--exit-when-idle", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "completed 50 tasks in this run" in proc.stdout
    with open_queue(url) as queue:  # type: ignore[attr-defined]
        assert queue.stats().completed == 50


def test_max_num_tasks_and_skip(tmp_path: Path) -> None:
    write_tasks(
        tmp_path / "tasks.json", [{"id": f"t{i}", "data": {"action": "ok"}} for i in range(20)]
    )
    proc = run_worker(
        tmp_path, "--task-file", "tasks.json", "--tasks-to-skip", "5", "--max-num-tasks", "10"
    )
    assert proc.returncode == 0, proc.stderr
    done = {
        e["task_id"]
        for e in read_events(tmp_path / "events.jsonl")
        if e["event_type"] == "task_completed"
    }
    assert done == {f"t{i}" for i in range(5, 15)}


def test_second_run_on_the_same_state_is_refused(tmp_path: Path) -> None:
    from tests.worker.helpers import start_worker

    write_tasks(tmp_path / "tasks.json", [{"id": "s", "data": {"action": "sleep", "seconds": 3}}])
    first = start_worker(tmp_path, "--task-file", "tasks.json")
    try:
        import time

        deadline = time.monotonic() + 10
        while not (tmp_path / "events.state.db.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        second = run_worker(tmp_path, "--task-file", "tasks.json")
        assert second.returncode == 1
        assert "in use" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.wait(timeout=30)
    assert first.returncode == 0
