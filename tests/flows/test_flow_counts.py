"""`status`, `monitor` and `flow status` count the waiting and blocked tasks of a flow that
`taskfleet flow run` coordinates on SQS (moto's server) and Pub/Sub (Google's emulator),
from its state file, read-only, while the coordinator runs and after it stopped.

The flow: a -> (b, c) -> d -> e, and c -> f. b is dead-lettered at its first failure, so d and
e are blocked behind it; c runs until the test lets it finish, so f waits for it meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from tests.flows.test_coordinator import coordinator, finish, queue_url, worker
from tests.flows.test_flow_runs import diamond, write

from helpers_taskfiles import run_taskfleet
from taskfleet.flows.flow_state import FlowState
from taskfleet.queues import open_queue
from taskfleet.tasks import Task

STATE = "tasks.json.flow-state.db"


def flow_tasks(cwd: Path) -> list[dict[str, Any]]:
    tasks = [
        *diamond(),
        {"id": "e", "data": {"n": 5}, "after": ["d"]},
        {"id": "f", "data": {"n": 6}, "after": ["c"]},
    ]
    tasks[1]["data"]["fail_unless"] = str(cwd / "fixed")  # b fails: dead-lettered at once
    tasks[2]["data"]["wait_for"] = str(cwd / "go")  # c runs until the test says go
    return tasks


def status(url: str, cwd: Path) -> dict[str, Any]:
    result = run_taskfleet("status", "--queue", url, "--flow-state", str(cwd / STATE), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def monitored(cwd: Path, *args: str) -> dict[str, Any]:
    result = run_taskfleet("monitor", str(cwd / "flow-events.jsonl"), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_status(url: str, cwd: Path, blocked: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (counts := status(url, cwd))["blocked"] != blocked:
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    return counts


@pytest.mark.parametrize("kind", ["sqs", "pubsub"])
def test_status_and_monitor_count_waiting_and_blocked_of_a_coordinated_flow(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    write(tmp_path / "tasks.json", flow_tasks(tmp_path))
    url = queue_url(request, kind, max_attempts=1)
    coord = coordinator(tmp_path, url)

    # No worker yet: a is sent, the other five wait for it; nothing is blocked.
    counts = status(url, tmp_path)
    assert (counts["waiting"], counts["blocked"]) == (5, 0)
    flow = run_taskfleet("flow", "status", "--task-file", str(tmp_path / "tasks.json"), "--json")
    assert flow.returncode == 0, flow.stderr
    described = json.loads(flow.stdout)
    assert described.pop("state") == str(tmp_path / STATE)
    assert described.pop("queue").startswith(f"{kind}://")
    assert described == {
        "total": 6,
        "completed": 0,
        "sent": 1,
        "to_send": 0,
        "waiting": 5,
        "blocked": 0,
        "dead": 0,
        "dead_ids": [],
        "blocked_by": {},
    }

    # b dead-lettered while c runs: d and e are blocked behind b, f waits for c.
    work = worker(tmp_path, url, idle=8)
    counts = wait_for_status(url, tmp_path, blocked=2)
    assert (counts["waiting"], counts["blocked"], counts["dead"]) == (3, 2, 1)
    assert coord.poll() is None  # read while the coordinator runs
    summary = monitored(tmp_path, "--task-file", str(tmp_path / "tasks.json"))
    assert (summary["waiting"], summary["blocked"]) == (3, 2)

    (tmp_path / "go").touch()
    code, err = finish(coord)
    assert code == 2, err
    finish(work)
    counts = status(url, tmp_path)
    assert (counts["waiting"], counts["blocked"]) == (2, 2)  # f ran; d and e wait for b
    assert counts["remaining"] in (0, None)  # None: Pub/Sub counts no tasks
    text = run_taskfleet("status", "--queue", url, "--flow-state", str(tmp_path / STATE))
    assert text.returncode == 0, text.stderr
    assert "waiting and blocked: from the flow's state file" in text.stdout
    summary = monitored(tmp_path, "--flow-state", str(tmp_path / STATE))
    assert (summary["waiting"], summary["blocked"]) == (2, 2)
    live = run_taskfleet(
        "monitor",
        str(tmp_path / "flow-events.jsonl"),
        "--follow",
        "--idle-timeout",
        "1",
        "--refresh",
        "0.2",
        "--task-file",
        str(tmp_path / "tasks.json"),
    )
    assert live.returncode == 0, live.stderr
    assert "waiting 2, blocked 2" in live.stderr  # the status line while following
    lines = run_taskfleet("flow", "status", "--state", str(tmp_path / STATE))
    assert lines.returncode == 0, lines.stderr
    assert "3/6 completed" in lines.stdout and "2 blocked" in lines.stdout
    assert "dead-lettered: b;" in lines.stdout
    described = json.loads(
        run_taskfleet("flow", "status", "--state", str(tmp_path / STATE), "--json").stdout
    )
    assert described["blocked_by"] == {"d": "b", "e": "b"} and described["dead_ids"] == ["b"]

    # Without the state, the queue alone cannot tell.
    alone = run_taskfleet("status", "--queue", url, "--json")
    assert json.loads(alone.stdout)["waiting"] is None


def test_monitor_refuses_to_drain_the_event_queue_of_a_coordinated_flow(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    write(tmp_path / "tasks.json", flow_tasks(tmp_path))
    url = queue_url(request, "sqs", max_attempts=1)
    coord = coordinator(tmp_path, url)
    try:
        for found in ([], ["--flow-state", str(tmp_path / STATE)]):
            result = run_taskfleet(
                "monitor",
                "--queue",
                url,
                "-o",
                str(tmp_path / "stolen.jsonl"),
                "--task-file",
                str(tmp_path / "tasks.json"),
                *found,
            )
            assert result.returncode == 1, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert "`taskfleet flow run` coordinates this flow" in result.stderr
            assert "--follow --flow-state" in result.stderr
            assert not (tmp_path / "stolen.jsonl").exists()
    finally:
        coord.terminate()
        coord.communicate(timeout=30)


def record_flow(path: Path, queue: str) -> None:
    state = FlowState(path)
    try:
        state.create([Task("a", {}), Task("b", {}, ("a",))], {"queue": queue})
    finally:
        state.close()


def test_a_wrong_flow_state_is_one_clear_line_and_is_left_untouched(tmp_path: Path) -> None:
    url = f"fq://{tmp_path}/job"
    open_queue(url).close()
    (tmp_path / "events.jsonl").write_text("")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database\n" * 200)
    other_db = tmp_path / "other.db"
    with sqlite3.connect(other_db) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    other_queue = tmp_path / "other-queue.flow-state.db"
    record_flow(other_queue, f"fq://{tmp_path}/another")
    cases = [
        (str(tmp_path / "missing.db"), "no flow state file here", ("status", "monitor", "flow")),
        (str(not_sqlite), "not the state file of a flow", ("status", "monitor", "flow")),
        (str(other_db), "not the state file of a flow", ("status", "monitor", "flow")),
        (str(other_queue), f"the flow run on fq://{tmp_path}/another, not", ("status",)),
    ]
    commands = {
        "status": ["status", "--queue", url, "--flow-state"],
        "monitor": ["monitor", str(tmp_path / "events.jsonl"), "--flow-state"],
        "flow": ["flow", "status", "--state"],
    }
    before = {path: Path(path).read_bytes() for path, _, _ in cases if Path(path).exists()}
    for path, words, names in cases:
        for name in names:
            result = run_taskfleet(*commands[name], path)
            assert result.returncode == 1, (name, path, result.stdout, result.stderr)
            assert result.stderr.count("\n") == 1, result.stderr
            assert "Traceback" not in result.stderr
            assert path in result.stderr and words in result.stderr, result.stderr
    assert {path: Path(path).read_bytes() for path in before} == before
    assert not (tmp_path / "other.db-wal").exists() and not (tmp_path / "missing.db").exists()


def test_the_same_queue_spelled_with_other_options_is_accepted(tmp_path: Path) -> None:
    url = f"fq://{tmp_path}/job?max_attempts=1"
    open_queue(url).close()
    record_flow(tmp_path / "s.db", url)
    state = str(tmp_path / "s.db")
    plain = f"fq://{tmp_path}/job"
    result = run_taskfleet("status", "--queue", plain, "--flow-state", state, "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    # Nothing sent yet: b waits for a, and a, released, waits for the coordinator to send it.
    assert (counts["waiting"], counts["blocked"]) == (2, 0)


def test_a_queue_that_counts_its_flow_itself_refuses_a_flow_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    open_queue(url).close()
    record_flow(tmp_path / "s.db", url)
    state = str(tmp_path / "s.db")
    for command in (
        ["status", "--queue", url, "--flow-state", state],
        ["monitor", "--queue", url, "-o", str(tmp_path / "e.jsonl"), "--flow-state", state],
    ):
        result = run_taskfleet(*command)
        assert result.returncode == 1, result.stderr
        assert "counts its waiting and blocked tasks itself" in result.stderr
    result = run_taskfleet("flow", "status")
    assert result.returncode == 1 and "--state or its --task-file" in result.stderr
