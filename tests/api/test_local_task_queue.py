"""`LocalTaskQueue(parallel=N)`: code-tasks run by the worker runtime's child processes, the
results back in Python, a fresh run by default and a resumable one when asked for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.api.sample_tasks import Multiply, add, fail
from tests.worker.helpers import REPO, worker_env

from taskfleet.api.local import LocalTaskQueue, NothingRanWarning


def test_insert_then_execute_runs_every_task_and_returns_the_results() -> None:
    tq = LocalTaskQueue(parallel=2)
    tq.insert(add.task_with_id(f"add-{i}", i, 1) for i in range(20))
    tq.insert([Multiply(4, b=5), Multiply(4, b=5)])  # the same task twice runs once
    run = tq.execute()
    assert (run.completed, run.dead_lettered, run.exit_code) == (21, 0, 0)
    assert run.results["add-3"] == 4
    assert run.results[Multiply(4, b=5).to_task().id] == 20
    assert tq.execute().completed == 0  # inserted tasks are run once


def test_a_failing_task_is_dead_lettered_with_its_error() -> None:
    run = LocalTaskQueue(parallel=1).insert_all(
        [fail.task_with_id("bad", "broken"), add.task(1, 1)]
    )
    assert (run.completed, run.dead_lettered, run.exit_code) == (1, 1, 2)
    assert run.errors == {"bad": "ValueError: broken"}


def test_the_same_call_runs_again_unless_a_state_is_given(tmp_path: Path) -> None:
    def tasks() -> list[object]:
        return [add.task(i, 2) for i in range(5)]

    assert LocalTaskQueue(parallel=2).insert_all(tasks()).completed == 5
    assert LocalTaskQueue(parallel=2).insert_all(tasks()).completed == 5
    state = tmp_path / "job.state.db"
    assert LocalTaskQueue(parallel=2, state=state).insert_all(tasks()).completed == 5
    with pytest.warns(NothingRanWarning, match=f"0 tasks ran: all 5 .*{state}"):
        again = LocalTaskQueue(parallel=2, state=state).insert_all(tasks())
    assert again.completed == 0 and again.summary.completed_before == 5
    assert (tmp_path / "job.events.jsonl").exists()  # kept beside the state, for resume


def test_a_new_process_runs_the_same_tasks_again(tmp_path: Path) -> None:
    """The surprise python-task-queue users must not meet: a second identical script runs."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            from taskfleet import LocalTaskQueue
            from tests.api.sample_tasks import add
            run = LocalTaskQueue(parallel=2).insert_all(add.task(i, 1) for i in range(7))
            print("RAN", run.completed)
            """
        )
    )
    env = worker_env(PYTHONPATH=f"{REPO / 'src'}:{REPO}")
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "RAN 7" in done.stdout
