"""Flows run end to end by real worker processes (tests/flows/flow_worker.py).

Each task adds its own `n` to the totals its dependencies returned
(`worker_data.dependency_results`), so the aggregate's total proves the results went down the
graph; each start is logged with its time, so the order can be checked against the
`task_completed` events of the dependencies (written before their ack, which is what releases
a dependent: a start after the completion event is the only order possible).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.worker.helpers import read_events, worker_env

from helpers_taskfiles import run_taskfleet, sqlite_url

FLOW_WORKER = Path(__file__).with_name("flow_worker.py")
Tasks = list[dict[str, Any]]


def diamond() -> Tasks:
    return [
        {"id": "a", "data": {"n": 1}},
        {"id": "b", "data": {"n": 10}, "after": ["a"]},
        {"id": "c", "data": {"n": 100}, "after": ["a"]},
        {"id": "d", "data": {"n": 1000}, "after": ["b", "c"]},
    ]


def fan(groups: int = 2, width: int = 12, sleep: float = 0.0) -> Tasks:
    """Per group: prepare -> `width` parts -> aggregate."""
    tasks: Tasks = []
    for g in range(groups):
        prep = f"g{g}-prepare"
        parts = [f"g{g}-part-{i:02d}" for i in range(width)]
        tasks.append({"id": prep, "data": {"n": 1}})
        tasks += [{"id": p, "data": {"n": 1, "sleep": sleep}, "after": [prep]} for p in parts]
        tasks.append({"id": f"g{g}-aggregate", "data": {"n": 0}, "after": parts})
    return tasks


def expected_totals(tasks: Tasks) -> dict[str, int]:
    """What each task returns: its n plus its dependencies' totals."""
    by_id = {t["id"]: t for t in tasks}
    totals: dict[str, int] = {}

    def total(task_id: str) -> int:
        if task_id not in totals:
            task = by_id[task_id]
            totals[task_id] = task["data"]["n"] + sum(total(d) for d in task.get("after", []))
        return totals[task_id]

    for task in tasks:
        total(task["id"])
    return totals


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLOW_WORKER), *args],
        cwd=cwd,
        env=worker_env(FLOW_STARTS=str(cwd / "starts.txt"), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(FLOW_WORKER), *args],
        cwd=cwd,
        env=worker_env(FLOW_STARTS=str(cwd / "starts.txt"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def starts(cwd: Path) -> list[tuple[str, float]]:
    path = cwd / "starts.txt"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.count(" ") == 3:  # a line the kill cut short is not a start we can check
            task_id, _, when, _ = line.split(" ")
            rows.append((task_id, float(when)))
    return rows


def completions(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    done: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["event_type"] == "task_completed" and not event.get("retry"):
            done.setdefault(event["task_id"], []).append(event)
    return done


def check_flow(tasks: Tasks, cwd: Path, events: list[dict[str, Any]], *, once: bool = True) -> None:
    """Every task completed with the right total; none started before each of its
    dependencies had a completion event; with `once`, each started and completed once."""
    done = completions(events)
    assert set(done) == {t["id"] for t in tasks}, sorted(set(t["id"] for t in tasks) - set(done))
    totals = expected_totals(tasks)
    for task_id, records in done.items():
        assert records[-1]["result"]["total"] == totals[task_id], task_id
    first_done = {
        task_id: min(datetime.fromisoformat(e["timestamp"]).timestamp() for e in records)
        for task_id, records in done.items()
    }
    after = {t["id"]: t.get("after", []) for t in tasks}
    started = starts(cwd)
    for task_id, when in started:
        for dependency in after[task_id]:
            assert first_done[dependency] <= when, f"{task_id} started before {dependency} ended"
    if once:
        counts = Counter(task_id for task_id, _ in started)
        assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]
        assert all(len(records) == 1 for records in done.values())


def write(path: Path, tasks: Tasks) -> Path:
    path.write_text(json.dumps(tasks))
    return path


@pytest.mark.parametrize("shape", [diamond, fan], ids=["diamond", "fan-out-fan-in"])
def test_a_local_run_of_a_task_file_runs_the_flow_in_order(tmp_path: Path, shape: Any) -> None:
    tasks = shape()
    write(tmp_path / "tasks.json", tasks)
    result = run(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--event-log-file",
        "events.jsonl",
        "--num-simultaneous-tasks",
        "3",
    )
    assert result.returncode == 0, result.stderr
    check_flow(tasks, tmp_path, read_events(tmp_path / "events.jsonl"))


@pytest.mark.parametrize("shape", [diamond, fan], ids=["diamond", "fan-out-fan-in"])
def test_two_workers_share_a_sqlite_queue_and_run_each_task_once(
    tmp_path: Path, shape: Any
) -> None:
    tasks = shape()
    write(tmp_path / "tasks.json", tasks)
    url = sqlite_url(tmp_path / "flow.db")
    loaded = run_taskfleet(
        "load-queue", "--queue", url, "--task-file", str(tmp_path / "tasks.json")
    )
    assert loaded.returncode == 0, loaded.stderr
    workers = [
        start(
            tmp_path,
            "--queue",
            url,
            "--event-log-file",
            f"events-{i}.jsonl",
            "--event-queue",
            "none",
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


@pytest.mark.parametrize("shape", [diamond, fan], ids=["diamond", "fan-out-fan-in"])
def test_a_worker_drains_a_flow_from_a_memory_queue(tmp_path: Path, shape: Any) -> None:
    tasks = shape()
    write(tmp_path / "tasks.json", tasks)
    result = run(
        tmp_path,
        "--queue",
        "memory://flow",
        "--event-log-file",
        "events.jsonl",
        "--num-simultaneous-tasks",
        "3",
        "--exit-when-idle",
        "0.5",
        FLOW_LOAD=str(tmp_path / "tasks.json"),
    )
    assert result.returncode == 0, result.stderr
    check_flow(tasks, tmp_path, read_events(tmp_path / "events.jsonl"))


def test_a_dead_lettered_dependency_blocks_its_dependents_until_redriven(
    tmp_path: Path,
) -> None:
    tasks = [*diamond(), {"id": "e", "data": {"n": 5}, "after": ["d"]}]
    tasks[1]["data"]["fail_unless"] = str(tmp_path / "fixed")  # b fails until the fix
    write(tmp_path / "tasks.json", tasks)
    args = ("--task-file", "tasks.json", "--event-log-file", "events.jsonl")
    failed = run(tmp_path, *args)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "2 blocked behind a dead letter" in failed.stdout
    events = read_events(tmp_path / "events.jsonl")
    blocked = {e["task_id"]: e["blocked_by"] for e in events if e["event_type"] == "task_blocked"}
    assert blocked == {"d": "b", "e": "b"}
    assert set(completions(events)) == {"a", "c"}

    url = sqlite_url(tmp_path / "events.state.db")
    status = run_taskfleet("status", "--queue", url, "--json")
    counts = json.loads(status.stdout)
    assert (counts["dead"], counts["waiting"], counts["blocked"]) == (1, 2, 2)
    monitored = run_taskfleet("monitor", str(tmp_path / "events.jsonl"), "--json")
    assert json.loads(monitored.stdout)["blocked"] == 2

    (tmp_path / "fixed").touch()
    assert run_taskfleet("redrive", "--queue", url).returncode == 0
    rerun = run(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    events = read_events(tmp_path / "events.jsonl")
    check_flow(tasks, tmp_path, events, once=False)
    runs = Counter(task_id for task_id, _ in starts(tmp_path))
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1}
    monitored = run_taskfleet("monitor", str(tmp_path / "events.jsonl"), "--json")
    assert json.loads(monitored.stdout)["blocked"] == 0


def test_a_bad_graph_is_refused_by_load_queue_with_nothing_inserted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cycle.json",
        [
            {"id": "a", "data": {}, "after": ["c"]},
            {"id": "b", "data": {}, "after": ["a"]},
            {"id": "c", "data": {}, "after": ["b"]},
        ],
    )
    url = sqlite_url(tmp_path / "q.db")
    result = run_taskfleet("load-queue", "--queue", url, "--task-file", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert "cycle" in first and "cycle.json: index" in first
    assert "-> a ->" in first or first.split("run: ")[1].startswith("a ->")
    status = json.loads(run_taskfleet("status", "--queue", url, "--json").stdout)
    assert status["inserted"] == 0


def test_kill_9_mid_flow_then_rerun_loses_nothing_and_releases_nothing_twice(
    tmp_path: Path,
) -> None:
    tasks = fan(groups=2, width=10, sleep=0.3)
    write(tmp_path / "tasks.json", tasks)
    args = (
        "--task-file",
        "tasks.json",
        "--event-log-file",
        "events.jsonl",
        "--num-simultaneous-tasks",
        "3",
    )
    worker = start(tmp_path, *args)
    deadline = time.monotonic() + 60
    while len(completions(read_events(tmp_path / "events.jsonl"))) < 6:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the flow did not get going"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=30)
    done_before = set(completions(read_events(tmp_path / "events.jsonl")))
    assert not {"g0-aggregate", "g1-aggregate"} <= done_before, "killed too late to tell"

    rerun = run(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    events = read_events(tmp_path / "events.jsonl")
    check_flow(tasks, tmp_path, events, once=False)
    runs = Counter(task_id for task_id, _ in starts(tmp_path))
    assert runs["g0-aggregate"] == 1 and runs["g1-aggregate"] == 1
    for task_id in done_before:  # what completed before the kill is not run again
        assert runs[task_id] == 1, task_id
