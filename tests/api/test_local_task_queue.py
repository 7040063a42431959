"""`LocalTaskQueue(parallel=N)`: code-tasks run by the worker runtime's child processes, the
results back in Python, a fresh run by default and a resumable one when asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from tests.api.sample_tasks import (
    Multiply,
    add,
    fail,
    fail_first,
    sleep_then,
    sum_of_dependencies,
)
from tests.worker.helpers import REPO, worker_env

from taskfleet.api.local import LocalTaskQueue, NothingRanWarning
from taskfleet.errors import TaskFileError
from taskfleet.queues import memory
from taskfleet.tasks import Task
from taskfleet.worker.feed import FEED_BATCH


def test_insert_then_execute_runs_every_task_and_returns_the_results() -> None:
    tq = LocalTaskQueue(parallel=2)
    tq.insert(add.task_with_id(f"add-{i}", i, 1) for i in range(20))
    tq.insert([Multiply(4, b=5), Multiply(4, b=5)])  # the same task twice runs once
    run = tq.execute()
    assert (run.completed, run.dead_lettered, run.exit_code) == (21, 0, 0)
    assert run.results["add-3"] == 4
    assert run.results[Multiply(4, b=5).to_task().id] == 20
    assert tq.execute().completed == 0  # inserted tasks are run once


def test_a_failing_task_is_dead_lettered_with_its_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    run = LocalTaskQueue(parallel=1).insert_all(
        [fail.task_with_id("bad", "broken"), add.task(1, 1)]
    )
    assert (run.completed, run.dead_lettered, run.exit_code) == (1, 1, 2)
    assert run.errors == {"bad": "ValueError: broken"}
    # the run's queue is gone with the run: the hint names no command that would read it
    err = capfd.readouterr().err
    assert "some tasks were dead-lettered: their errors are in the run's events" in err, err
    assert "taskfleet dead-letters" not in err and "memory://" not in err, err


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


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_throwaway_run_writes_every_task_s_events_and_keeps_no_queue(tmp_path: Path) -> None:
    """The throwaway run's queue lives in memory: its events are still all written, and the
    queue is gone once the run is over."""
    events = tmp_path / "events.jsonl"
    tasks = [add.task_with_id(f"t{i}", i, 1) for i in range(300)]
    run = LocalTaskQueue(parallel=2, event_log_file=events).insert_all(tasks)
    assert run.completed == 300 and run.results["t299"] == 300
    completed = [e["task_id"] for e in _events(events) if e["event_type"] == "task_completed"]
    assert sorted(completed) == sorted(f"t{i}" for i in range(300))
    assert not [name for name in memory._STORES if name.startswith("taskfleet-local-")]


def test_a_throwaway_run_kills_a_task_past_max_runtime_and_retries_as_told(
    tmp_path: Path,
) -> None:
    """Per-task hard timeout and retries hold in a throwaway run: the task that overran is
    killed (twice: its retry overruns too) and dead-lettered; the tasks queued behind it on
    its child run; a task that failed once completes on its retry."""
    events = tmp_path / "events.jsonl"
    tasks = [
        sleep_then.task_with_id("slow", 30, "never"),
        fail_first.task_with_id("flaky", str(tmp_path / "marker")),
        *(add.task_with_id(f"t{i}", i, 1) for i in range(20)),
    ]
    run = LocalTaskQueue(
        parallel=2,
        event_log_file=events,
        max_runtime=0.5,
        retry_on_timeout=True,
        retry_on_exception=True,
        max_attempts=2,
        backoff_base=0.01,
        backoff_cap=0.01,
    ).insert_all(tasks)
    assert (run.completed, run.dead_lettered) == (21, 1)
    assert run.results["flaky"] == "second attempt" and run.results["t19"] == 20
    assert "flaky" not in run.errors and "slow" not in run.results
    kinds = [(e["event_type"], e.get("task_id")) for e in _events(events)]
    assert kinds.count(("task_timed_out", "slow")) == 2
    assert ("task_dead_lettered", "slow") in kinds
    assert kinds.count(("task_exception", "flaky")) == 1


def test_tasks_that_wait_for_others_run_after_them_across_the_batches_of_the_feed() -> None:
    """A throwaway run loads its tasks as it runs, a batch at a time: a task that waits for
    one far later in the source (several batches on) still runs after it, with its result."""
    n = 3 * FEED_BATCH
    tasks: list[object] = [add.task_with_id(f"t{i}", i, 0) for i in range(n)]
    waiting = replace(add.task_with_id("sum", 1, 1), after=(f"t{n + 5}", "t0"))
    tasks.insert(FEED_BATCH + 3, waiting)  # in the second batch, naming a task of the fourth
    tasks += [add.task_with_id(f"t{i}", i, 0) for i in range(n, n + 10)]
    run = LocalTaskQueue(parallel=2).insert_all(tasks)
    assert (run.completed, run.dead_lettered) == (n + 11, 0)
    assert run.results["sum"] == 2 and run.results[f"t{n + 5}"] == n + 5


def test_a_task_loaded_after_its_dependencies_completed_still_gets_their_results() -> None:
    """The feed loads a task that waits for the first ten only after thousands of others:
    by then those ten completed, with nothing waiting for them yet; the run's queue kept
    their results, and the task gets them."""
    n = 10 * FEED_BATCH
    tasks: list[object] = [add.task_with_id(f"t{i}", i, 0) for i in range(n)]
    tasks.append(
        replace(sum_of_dependencies.task_with_id("sum"), after=tuple(f"t{i}" for i in range(10)))
    )
    run = LocalTaskQueue(parallel=2).insert_all(tasks)
    assert (run.completed, run.dead_lettered) == (n + 1, 0), run.errors
    assert run.results["sum"] == sum(range(10))


def test_a_bad_task_late_in_the_source_is_refused_naming_it() -> None:
    """The feed reads the source as the run goes: what it refuses is still raised, by
    `execute`, naming the task (the tasks before it may have run)."""
    tasks = [add.task_with_id(f"t{i}", i, 0) for i in range(2 * FEED_BATCH)]
    tasks.append(Task("bad", {"value": {1, 2}}))  # a set is not JSON
    with pytest.raises(TaskFileError, match="task 'bad'"):
        LocalTaskQueue(parallel=2).insert_all(tasks)
    assert not [name for name in memory._STORES if name.startswith("taskfleet-local-")]


def test_a_task_whose_data_has_an_after_key_does_not_end_the_feed_s_streaming() -> None:
    """Only a task that waits for others makes the feed load the rest of the source in one
    send; an "after" inside a task's data is data."""
    from taskfleet.queues import open_queue
    from taskfleet.tasks.batches import iter_task_batches
    from taskfleet.worker.feed import TaskFeed

    tasks = [Task(f"t{i}", {"after": "2020-01-01", "i": i}) for i in range(3 * FEED_BATCH)]
    with open_queue("memory://feed-after-in-data") as queue:
        feed = TaskFeed(queue, iter_task_batches(tasks, batch_size=FEED_BATCH))
        assert feed.load_next() == FEED_BATCH
        assert not feed.exhausted
        waiting = replace(add.task_with_id("w", 1, 1), after=("t0",))
        feed = TaskFeed(queue, iter_task_batches([waiting, *tasks[:5]], batch_size=1))
        feed.load_next()
        assert feed.exhausted  # a real `after`: the rest came in the same send
    memory.drop_store("feed-after-in-data")
