"""`taskfleet flow run` on SQS (moto's server) and Pub/Sub (Google's emulator), with a real
coordinator process and a real worker process (tests/flows/flow_worker.py).

The worker writes its events to its own file and to the queue's event queue, which the
coordinator follows; the checks use the worker's file (the coordinator's copy may repeat an
event it read again after a kill) and the starts the tasks logged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from queue_servers import PausableProxy
from tests.flows.test_flow_runs import (
    FLOW_WORKER,
    check_flow,
    completions,
    diamond,
    fan,
    starts,
    write,
)
from tests.worker.helpers import read_events, worker_env

from helpers_taskfiles import run_taskfleet

TASKFLEET = [sys.executable, "-c", "from taskfleet.cli import main; main()"]


def queue_url(request: pytest.FixtureRequest, kind: str, *, max_attempts: int = 3) -> str:
    name = f"flow{uuid.uuid4().hex[:10]}"
    if kind == "fq":  # a shared directory keeps no dependency state either
        base = request.getfixturevalue("tmp_path")
        return f"fq://{base}/{name}?max_attempts={max_attempts}"
    if kind == "sqs":
        endpoint = request.getfixturevalue("sqs_endpoint")
        return f"sqs://{name}?region=us-east-1&endpoint_url={endpoint}&max_attempts={max_attempts}"
    host = request.getfixturevalue("pubsub_endpoint")
    return f"pubsub://test-project/{name}?endpoint={host}&max_attempts={max_attempts}"


def coordinator(cwd: Path, url: str, *, started: bool = True) -> subprocess.Popen[str]:
    """A coordinator process, its stderr in cwd/coordinator.err; with `started`, returned
    once it has sent its first tasks (so the queues exist for the worker)."""
    err = open(cwd / "coordinator.err", "w")  # noqa: SIM115 (the process owns it)
    process = subprocess.Popen(
        [
            *TASKFLEET,
            "flow",
            "run",
            "--queue",
            url,
            "--task-file",
            "tasks.json",
            "--events-file",
            "flow-events.jsonl",
        ],
        cwd=cwd,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=err,
        text=True,
    )
    err.close()
    process.err_path = cwd / "coordinator.err"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while started and " sent" not in (cwd / "coordinator.err").read_text():
        assert process.poll() is None, (cwd / "coordinator.err").read_text()
        assert time.monotonic() < deadline, "the coordinator sent nothing"
        time.sleep(0.05)
    return process


def worker(
    cwd: Path, url: str, log: str = "worker.jsonl", idle: float = 6
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(FLOW_WORKER),
            "--queue",
            url,
            "--event-log-file",
            log,
            "--num-simultaneous-tasks",
            "3",
            "--exit-when-idle",
            str(idle),
        ],
        cwd=cwd,
        env=worker_env(FLOW_STARTS=str(cwd / "starts.txt")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Wait for a process; its stderr (the coordinator's from its file)."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s: {err}") from None
    if err is None:
        err = process.err_path.read_text()  # type: ignore[attr-defined]
    return process.returncode, err


def worker_events(cwd: Path) -> list[dict[str, Any]]:
    return [e for p in sorted(cwd.glob("worker*.jsonl")) for e in read_events(p)]


@pytest.mark.parametrize("kind", ["sqs", "pubsub", "fq"])
@pytest.mark.parametrize("shape", [diamond, fan], ids=["diamond", "fan-out-fan-in"])
def test_the_coordinator_runs_a_flow_in_order_with_results_passed_down(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, shape: Any
) -> None:
    tasks = shape()
    write(tmp_path / "tasks.json", tasks)
    url = queue_url(request, kind)
    coord = coordinator(tmp_path, url)
    work = worker(tmp_path, url)
    code, err = finish(coord)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"{len(tasks)}/{len(tasks)} completed" in err
    finish(work)
    check_flow(tasks, tmp_path, worker_events(tmp_path))
    # The coordinator's copy of the events holds every completion too.
    assert set(completions(read_events(tmp_path / "flow-events.jsonl"))) == {t["id"] for t in tasks}


@pytest.mark.parametrize("kind", ["sqs", "pubsub", "fq"])
def test_a_dead_lettered_dependency_blocks_until_redrive_then_the_rest_runs(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    tasks = [*diamond(), {"id": "e", "data": {"n": 5}, "after": ["d"]}]
    tasks[1]["data"]["fail_unless"] = str(tmp_path / "fixed")  # b fails until the fix
    write(tmp_path / "tasks.json", tasks)
    url = queue_url(request, kind, max_attempts=1)
    coord = coordinator(tmp_path, url)
    work = worker(tmp_path, url)
    code, err = finish(coord)
    assert code == 2, err
    assert "Traceback" not in err
    assert "task 'b' was dead-lettered; 2 task(s) wait for it, blocked: d, e" in err
    assert "taskfleet redrive" in err
    events = read_events(tmp_path / "flow-events.jsonl")
    blocked = {e["task_id"]: e["blocked_by"] for e in events if e["event_type"] == "task_blocked"}
    assert blocked == {"d": "b", "e": "b"}
    assert set(completions(events)) == {"a", "c"}
    monitored = run_taskfleet("monitor", str(tmp_path / "flow-events.jsonl"), "--json")
    assert json.loads(monitored.stdout)["blocked"] == 2

    (tmp_path / "fixed").touch()
    redriven = run_taskfleet("redrive", "--queue", url)
    assert redriven.returncode == 0, redriven.stderr
    finish(work)
    coord = coordinator(tmp_path, url)
    work = worker(tmp_path, url, "worker-2.jsonl")
    code, err = finish(coord)
    assert code == 0, err
    assert "redriven" in err
    finish(work)
    check_flow(tasks, tmp_path, worker_events(tmp_path), once=False)
    runs = Counter(task_id for task_id, _ in starts(tmp_path))
    assert runs == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1}


def test_a_coordinator_killed_mid_flow_resumes_and_sends_nothing_twice(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tasks = fan(groups=2, width=8, sleep=0.3)
    write(tmp_path / "tasks.json", tasks)
    url = queue_url(request, "sqs")
    coord = coordinator(tmp_path, url)
    # The events the killed coordinator was reading come back when their lease (10 s) ends:
    # the worker waits that long for the tasks they release.
    work = worker(tmp_path, url, idle=15)
    deadline = time.monotonic() + 60
    while len(completions(worker_events(tmp_path))) < 5:
        assert coord.poll() is None, coord.communicate()
        assert time.monotonic() < deadline, "the flow did not get going"
        time.sleep(0.05)
    os.kill(coord.pid, signal.SIGKILL)
    coord.communicate(timeout=30)
    done_before = set(completions(worker_events(tmp_path)))
    assert not {"g0-aggregate", "g1-aggregate"} <= done_before, "killed too late to tell"

    code, err = finish(coordinator(tmp_path, url))
    assert code == 0, err
    assert "resuming" in err
    finish(work)
    check_flow(tasks, tmp_path, worker_events(tmp_path))
    runs = Counter(task_id for task_id, _ in starts(tmp_path))
    assert set(runs.values()) == {1}, runs


@pytest.mark.parametrize("where", ["sqlite:///{tmp}/q.db", "{tmp}/q.db", "memory://flow"])
def test_queues_that_keep_the_flow_themselves_are_refused_in_one_line(
    tmp_path: Path, where: str
) -> None:
    write(tmp_path / "tasks.json", diamond())
    result = run_taskfleet(
        "flow",
        "run",
        "--queue",
        where.format(tmp=tmp_path),
        "--task-file",
        str(tmp_path / "tasks.json"),
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "workers release each task" in result.stderr
    assert not (tmp_path / "q.db").exists()
    assert not list(tmp_path.glob("*.flow-state.db"))


def test_a_bad_graph_is_refused_with_nothing_sent(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    write(
        tmp_path / "tasks.json",
        [{"id": "a", "data": {}}, {"id": "b", "data": {}, "after": ["zz"]}],
    )
    url = queue_url(request, "sqs")
    result = run_taskfleet(
        "flow", "run", "--queue", url, "--task-file", str(tmp_path / "tasks.json")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "tasks.json: index 1" in result.stderr and "'zz'" in result.stderr
    status = run_taskfleet("status", "--queue", url, "--json")
    assert status.returncode == 1  # the queue was never created: nothing was sent


def test_ctrl_c_stops_the_coordinator_with_130_and_the_same_command_resumes(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tasks = diamond()
    write(tmp_path / "tasks.json", tasks)
    url = queue_url(request, "sqs")
    coord = coordinator(tmp_path, url)  # no worker yet: it waits for a's completion
    coord.send_signal(signal.SIGINT)
    code, err = finish(coord)
    assert code == 130, err
    assert "Traceback" not in err and "run the same command to resume" in err

    coord = coordinator(tmp_path, url)
    work = worker(tmp_path, url)
    code, err = finish(coord)
    assert code == 0, err
    assert "resuming" in err
    finish(work)
    check_flow(tasks, tmp_path, worker_events(tmp_path))


def test_an_outage_of_the_queue_mid_flow_is_ridden_out(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A proxy in front of moto cuts every connection of the coordinator for 8 s (longer than
    boto3's own retries) while the worker, connected directly, goes on: the coordinator says
    the queue is away, waits for it, and finishes the flow."""
    tasks = fan(groups=1, width=6, sleep=0.2)
    write(tmp_path / "tasks.json", tasks)
    direct = queue_url(request, "sqs")
    server = request.getfixturevalue("sqs_endpoint")
    with PausableProxy(int(server.rsplit(":", 1)[1])) as proxy:
        coord = coordinator(tmp_path, proxy.url_of(direct))
        work = worker(tmp_path, direct, idle=12)  # it waits out the cut too
        proxy.pause()
        time.sleep(8)
        proxy.resume()
        code, err = finish(coord)
    assert code == 0, err
    assert "Traceback" not in err
    assert "is unavailable" in err and "back after" in err, err
    finish(work)
    check_flow(tasks, tmp_path, worker_events(tmp_path))
