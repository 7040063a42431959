"""The task file is the source of truth of a `--task-file` run, and a state keeps one file.

A rerun gives the tasks not yet completed the data the file has now and says so; completed
tasks whose data changed are named, and `--rerun-changed` runs them again; dead letters take
the new data, so that `redrive` and a rerun run the fixed task. A queue's tasks take new data
with `load-queue --update`. Another task file on the same state is refused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.worker.helpers import read_events, run_worker, worker_env, write_tasks

from taskfleet.errors import TaskfleetError
from taskfleet.queues import Queue
from taskfleet.queues.memory import MemoryQueue
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks.loading import load_tasks_into

ECHO_WORKER = """
import time
from taskfleet import Worker

def process_task(task_id, data, worker_data):
    if data.get("broken"):
        raise ValueError("broken data")
    time.sleep(data.get("sleep", 0))
    return False, data

if __name__ == "__main__":
    Worker(process_task).run()
"""


def _echo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "echo_worker.py"
    if not script.exists():
        script.write_text(ECHO_WORKER)
    return run_worker(tmp_path, *args, script=script)


def _taskfleet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=60,
    )


def _last_results(tmp_path: Path) -> dict[str, Any]:
    """Each task's result in its last completion."""
    return {
        e["task_id"]: e["result"]
        for e in read_events(tmp_path / "events.jsonl")
        if e["event_type"] == "task_completed"
    }


def test_a_rerun_gives_the_tasks_not_yet_completed_the_file_s_data(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i}", "data": {"sleep": 0.2, "v": 1}} for i in range(30)]
    write_tasks(tmp_path / "tasks.json", tasks)
    first = _echo(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "1",
        "--simulate-spot-termination-after",
        "0.5",
    )
    assert first.returncode == 130, first.stderr
    done_first = set(_last_results(tmp_path))
    assert 0 < len(done_first) < 30
    for t in tasks:
        t["data"] = {"sleep": 0, "v": 2}
    write_tasks(tmp_path / "tasks.json", tasks)
    second = _echo(tmp_path, "--task-file", "tasks.json")
    assert second.returncode == 0, second.stderr
    left = 30 - len(done_first)
    assert f"{left} tasks not yet completed take the new data of the task file" in second.stderr
    assert f"{len(done_first)} completed tasks changed in the task file" in second.stderr
    results = _last_results(tmp_path)
    assert len(results) == 30
    for task_id, result in results.items():
        assert result["v"] == (1 if task_id in done_first else 2), task_id


def test_a_fixed_dead_letter_is_redriven_with_its_new_data_and_changed_completed_tasks_rerun(
    tmp_path: Path,
) -> None:
    tasks = [
        {"id": "a", "data": {"v": 1}},
        {"id": "b", "data": {"broken": True}},
        {"id": "c", "data": {"v": 1}},
    ]
    write_tasks(tmp_path / "tasks.json", tasks)
    first = _echo(tmp_path, "--task-file", "tasks.json")
    assert first.returncode == 2, first.stderr

    tasks[0]["data"] = {"v": 2}  # a completed task changes
    tasks[1]["data"] = {"fixed": True}  # the dead letter is fixed
    tasks.append({"id": "d", "data": {"v": 1}})
    write_tasks(tmp_path / "tasks.json", tasks)
    second = _echo(tmp_path, "--task-file", "tasks.json")
    assert second.returncode == 2, second.stderr  # b is still a dead letter until redriven
    assert "1 dead-lettered task takes the new data of the task file" in second.stderr
    assert "taskfleet redrive --queue sqlite:///events.state.db" in second.stderr
    assert "1 completed task changed in the task file (a) and is not run again" in second.stderr
    assert "--rerun-changed" in second.stdout  # the last line says so too
    assert _last_results(tmp_path) == {"a": {"v": 1}, "c": {"v": 1}, "d": {"v": 1}}

    redrive = _taskfleet(tmp_path, "redrive", "--queue", "sqlite:///events.state.db")
    assert redrive.returncode == 0, redrive.stderr
    third = _echo(tmp_path, "--task-file", "tasks.json")
    assert third.returncode == 0, third.stderr
    assert "completed 1 task in this run" in third.stdout
    assert _last_results(tmp_path)["b"] == {"fixed": True}

    fourth = _echo(tmp_path, "--task-file", "tasks.json", "--rerun-changed")
    assert fourth.returncode == 0, fourth.stderr
    assert "1 task completed or dead-lettered before runs again" in fourth.stderr
    assert "completed 1 task in this run (3 before it)" in fourth.stdout
    assert _last_results(tmp_path)["a"] == {"v": 2}

    fifth = _echo(tmp_path, "--task-file", "tasks.json")
    assert "changed in the task file" not in fifth.stderr + fifth.stdout
    assert "completed 0 tasks in this run (4 before it)" in fifth.stdout


def test_load_queue_update_gives_a_queue_s_tasks_the_file_s_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'job.db'}"
    tasks = [{"id": "a", "data": {"v": 1}}, {"id": "b", "data": {"broken": True}}]
    write_tasks(tmp_path / "tasks.json", tasks)
    loaded = _taskfleet(tmp_path, "load-queue", "--queue", url, "--task-file", "tasks.json")
    assert loaded.returncode == 0, loaded.stderr
    with SQLiteQueue(tmp_path / "job.db") as queue:
        (message,) = [m for m in queue.receive(2, 60) if m.task.id == "b"]
        queue.dead_letter(message, "broken data")
    tasks[1]["data"] = {"fixed": True}
    write_tasks(tmp_path / "tasks.json", tasks)

    plain = _taskfleet(tmp_path, "load-queue", "--queue", url, "--task-file", "tasks.json")
    assert plain.returncode == 0, plain.stderr
    with SQLiteQueue(tmp_path / "job.db") as queue:
        assert [d.task.data for d in queue.dead_letters()] == [{"broken": True}]

    update = _taskfleet(
        tmp_path, "load-queue", "--queue", url, "--task-file", "tasks.json", "--update"
    )
    assert update.returncode == 0, update.stderr
    assert "new data: 0 waiting, 1 dead letters" in update.stdout + update.stderr
    assert _taskfleet(tmp_path, "redrive", "--queue", url).returncode == 0
    with SQLiteQueue(tmp_path / "job.db") as queue:
        received = {m.task.id: m.task.data for m in queue.receive(5, 60)}
    assert received["b"] == {"fixed": True}


def test_another_task_file_on_the_same_state_is_refused(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "t1", "data": {"v": 1}}])
    write_tasks(tmp_path / "other.json", [{"id": "t1", "data": {"v": 9}}])
    assert _echo(tmp_path, "--task-file", "tasks.json").returncode == 0
    other = _echo(tmp_path, "--task-file", "other.json")
    assert other.returncode == 1, other.stderr
    assert "Traceback" not in other.stderr
    assert "tasks.json" in other.stderr and "other.json" in other.stderr
    assert "--event-log-file" in other.stderr
    # the same file, named from another folder, is the same state
    sub = tmp_path / "sub"
    sub.mkdir()
    again = run_worker(
        sub,
        "--task-file",
        "../tasks.json",
        "--event-log-file",
        str(tmp_path / "events.jsonl"),
        script=tmp_path / "echo_worker.py",
    )
    assert again.returncode == 0, again.stderr
    assert "completed 0 tasks in this run (1 before it)" in again.stdout
    # the other file runs with its own event log, and its own state beside it
    own = _echo(tmp_path, "--task-file", "other.json", "--event-log-file", "other.jsonl")
    assert own.returncode == 0, own.stderr
    assert "completed 1 task in this run (0 before it)" in own.stdout
    (done,) = [e for e in read_events(tmp_path / "other.jsonl") if e.get("result")]
    assert done["result"] == {"v": 9}


class _NoUpdates(MemoryQueue):
    """A backend that does not declare `updates_data` (a third party's, say): the base class
    refuses for it."""

    updates_data = False
    send_updates = Queue.send_updates


def test_a_queue_that_cannot_update_data_says_so(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "a", "data": {"v": 1}}])
    queue = _NoUpdates("no-updates")
    try:
        assert not queue.updates_data
        with pytest.raises(TaskfleetError, match="cannot give tasks already loaded new data"):
            load_tasks_into(queue, tmp_path / "tasks.json", update=True)
        assert queue.stats().inserted == 0
    finally:
        queue.close()
