"""Crash resilience of the main job: kill -9 the supervisor and resume; kill children at random."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from tests.worker.helpers import (
    ADDITION_DIR,
    BEHAVIOUR_WORKER,
    check_addition_results,
    read_events,
    run_worker,
    start_worker,
    worker_env,
)

from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks.batches import TaskBatch

ADDITION_WORKER = ADDITION_DIR / "worker_addition.py"


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill_9_supervisor_then_rerun_finishes_everything(tmp_path: Path) -> None:
    tasks_file = ADDITION_DIR / "addition_tasks.json"
    env = worker_env(ADDITION_OUTPUT_DIR=str(tmp_path / "results"), ADDITION_TASK_DELAY="0.0004")
    args = ("--task-file", str(tasks_file), "--num-simultaneous-tasks", "2")
    proc = start_worker(tmp_path, *args, script=ADDITION_WORKER, env=env)
    deadline = time.monotonic() + 60
    while _count_lines(tmp_path / "events.jsonl") < 3000:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        partial = queue.stats()
    assert 0 < partial.completed < 10_000
    assert partial.leased > 0  # the kill left leases behind

    second = run_worker(tmp_path, *args, script=ADDITION_WORKER, env=env)
    assert second.returncode == 0, second.stderr
    assert check_addition_results(tmp_path / "results", tasks_file) == 10_000
    summary = second.stdout.strip().splitlines()[-1]
    assert "interrupted by the previous run" in summary
    assert "possible duplicates" in summary
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        final = queue.stats()
    assert final.completed == 10_000 and final.remaining == 0 and final.dead == 0
    # every task has a final completion event; the ones counted twice are the duplicates
    completed = [
        e["task_id"]
        for e in read_events(tmp_path / "events.jsonl")
        if e["event_type"] == "task_completed"
    ]
    assert set(completed) == {f"addition-task-{i:06d}" for i in range(1, 10_001)}

    third = run_worker(tmp_path, *args, script=ADDITION_WORKER, env=env)
    assert third.returncode == 0
    assert "completed 0 tasks in this run (10,000 before it)" in third.stdout


def test_chaos_random_child_kills_lose_nothing(tmp_path: Path) -> None:
    tasks = json.loads((ADDITION_DIR / "addition_tasks.json").read_text())[:5000]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    env = worker_env(ADDITION_OUTPUT_DIR=str(tmp_path / "results"), ADDITION_TASK_DELAY="0.0006")
    proc = start_worker(
        tmp_path,
        "--task-file",
        str(tasks_file),
        "--num-simultaneous-tasks",
        "2",
        "--max-attempts",
        "20",
        "--backoff-base",
        "0.01",
        "--backoff-cap",
        "0.05",
        script=ADDITION_WORKER,
        env=env,
    )
    supervisor = psutil.Process(proc.pid)
    rng = random.Random(7)
    kills = 0
    while proc.poll() is None:
        try:
            children = [c for c in supervisor.children() if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            break
        if children:
            victim = rng.choice(children)
            try:
                victim.send_signal(signal.SIGKILL)
                kills += 1
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert kills >= 5
    assert check_addition_results(tmp_path / "results", tasks_file) == 5000
    events = read_events(tmp_path / "events.jsonl")
    exited = [e for e in events if e["event_type"] == "task_exited"]
    assert exited, "no kill hit a running task"
    assert all(e["exit_code"] == -signal.SIGKILL for e in exited)
    completed = [e["task_id"] for e in events if e["event_type"] == "task_completed"]
    assert set(completed) == {t["id"] for t in tasks}
    # duplicates are counted: every failed attempt shows in the summary
    plural = "" if len(exited) == 1 else "s"
    assert f"{len(exited):,} failed attempt{plural} ({len(exited):,} retried)" in out


def test_a_task_that_cannot_reach_a_child_is_dead_lettered_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A task nested deeper than any encoder takes, put in the queue past the loader's limits
    (as an older version or another program could): the supervisor must dead-letter it with
    its reason, finish the others, and exit 2; before, it died on every run."""
    db = tmp_path / "q.db"
    deep = "[" * 400 + "]" * 400
    bodies = [
        '{"id": "fine-1", "data": {"action": "ok"}}',
        '{"id": "too-deep", "data": {"x": ' + deep + "}}",
        '{"id": "fine-2", "data": {"action": "ok"}}',
    ]
    ids = ["fine-1", "too-deep", "fine-2"]
    with SQLiteQueue(db, max_attempts=3) as queue:
        queue.send_batches([TaskBatch("test", "item", range(3), ids, bodies, True)])
    events = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [
            sys.executable, str(BEHAVIOUR_WORKER), "--queue", f"sqlite:///{db}",
            "--exit-when-idle", "0", "--event-log-file", str(events),
        ],
        cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    by_task = {}
    for event in read_events(events):
        if "task_id" in event:
            by_task.setdefault(event["task_id"], []).append(event["event_type"])
    assert by_task["fine-1"] == by_task["fine-2"] == ["task_completed"]
    assert by_task["too-deep"] == ["task_exception", "task_dead_lettered"]
    with SQLiteQueue(db) as queue:
        (dead,) = list(queue.dead_letters())
    assert dead.task.id == "too-deep"
    assert "cannot be sent to a child process" in (dead.error or "")


def _results_written(results: Path) -> int:
    """How many result files the addition worker has written so far."""
    try:
        return sum(1 for _ in os.scandir(results))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_chaos_kills_of_children_and_supervisor_then_a_rerun_lose_nothing(
    tmp_path: Path,
) -> None:
    """20,000 tasks; while they run, children are SIGKILLed every few tenths of a second and
    the supervisor itself every second or two, each time started again with the same command;
    then a last run without kills. Every result is right, every task has a completion, and
    what ran twice is counted, not hidden (`taskfleet monitor` agrees with the events)."""
    tasks = [
        {"id": f"chaos-{i:05d}", "data": {"num1": i, "num2": 3 * i + 1}} for i in range(20_000)
    ]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    env = worker_env(ADDITION_OUTPUT_DIR=str(tmp_path / "results"), ADDITION_TASK_DELAY="0.0002")
    args = (
        "--task-file", str(tasks_file), "--num-simultaneous-tasks", "2",
        "--max-attempts", "50", "--backoff-base", "0.01", "--backoff-cap", "0.05",
    )  # fmt: skip
    rng = random.Random(11)
    supervisor_kills = child_kills = 0
    deadline = time.monotonic() + 90
    # The supervisor is killed after a random share of the work (not of the time), so that
    # the four kills land mid-run however fast or busy the machine is.
    while time.monotonic() < deadline and supervisor_kills < 4:
        proc = start_worker(tmp_path, *args, script=ADDITION_WORKER, env=env)
        supervisor = psutil.Process(proc.pid)
        kill_supervisor_after = _results_written(tmp_path / "results") + rng.randint(1500, 4000)
        while (
            proc.poll() is None and _results_written(tmp_path / "results") < kill_supervisor_after
        ):
            time.sleep(rng.uniform(0.05, 0.3))
            try:
                children = [c for c in supervisor.children() if c.status() != "zombie"]
                if children:
                    rng.choice(children).send_signal(signal.SIGKILL)
                    child_kills += 1
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            supervisor_kills += 1
        proc.communicate(timeout=30)
    final = run_worker(tmp_path, *args, script=ADDITION_WORKER, env=env)
    assert final.returncode == 0, final.stderr
    assert supervisor_kills >= 2 and child_kills >= 5, (supervisor_kills, child_kills)
    assert check_addition_results(tmp_path / "results", tasks_file) == 20_000
    events = read_events(tmp_path / "events.jsonl")
    completions = [e["task_id"] for e in events if e["event_type"] == "task_completed"]
    assert set(completions) == {t["id"] for t in tasks}
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        stats = queue.stats()
    assert stats.completed == 20_000 and stats.remaining == 0 and stats.dead == 0
    monitor = subprocess.run(
        [sys.executable, "-c", "from taskfleet.cli import main; main()", "monitor", "--json",
         str(tmp_path / "events.jsonl"), "--task-file", str(tasks_file)],
        capture_output=True, text=True, timeout=120, env=worker_env(),
    )  # fmt: skip
    assert monitor.returncode == 0, monitor.stderr
    summary = json.loads(monitor.stdout)
    assert summary["tasks_completed"] == 20_000 and summary["tasks_not_completed"] == 0
    # a task whose outcome was written but not acknowledged before a kill ran again: the
    # monitor counts each such task, exactly as the events show them
    counts = Counter(completions)
    assert summary["tasks_completed_more_than_once"] == sum(1 for n in counts.values() if n > 1)
