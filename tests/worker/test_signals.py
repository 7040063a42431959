"""Ctrl-C, SIGTERM, SIGHUP and spot termination, delivered to a real supervisor process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.worker.helpers import (
    BEHAVIOUR_WORKER,
    read_events,
    start_worker,
    worker_env,
    write_tasks,
)

from taskfleet.queues import open_queue
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task


def _sleep_tasks(tmp_path: Path, count: int, seconds: float) -> None:
    write_tasks(
        tmp_path / "tasks.json",
        [
            {"id": f"t{i:03d}", "data": {"action": "sleep", "seconds": seconds}}
            for i in range(count)
        ],
    )


def _wait_for_running(tmp_path: Path, proc, markers: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(list((tmp_path / "markers").glob("*"))) >= markers:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("tasks did not start")


def _start(tmp_path: Path, *args: str, script: Path = BEHAVIOUR_WORKER):  # type: ignore[no-untyped-def]
    (tmp_path / "markers").mkdir()
    return start_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "3",
        *args,
        script=script,
        env=worker_env(BEHAVIOUR_MARKERS=str(tmp_path / "markers")),
    )


def _state(tmp_path: Path):  # type: ignore[no-untyped-def]
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        return queue.stats()


def test_first_sigint_finishes_running_tasks_and_releases_the_rest(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 12, 1.5)
    proc = _start(tmp_path)
    _wait_for_running(tmp_path, proc, 3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 10
    assert "Traceback" not in err
    done = [
        e for e in read_events(tmp_path / "events.jsonl") if e["event_type"] == "task_completed"
    ]
    assert len(done) == 3  # the three running tasks finished; nothing new started
    stats = _state(tmp_path)
    assert stats.completed == 3 and stats.visible == 9 and stats.leased == 0
    assert "completed 3 tasks in this run" in out


def test_sigterm_behaves_as_the_first_sigint(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 9, 1.0)
    proc = _start(tmp_path)
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    stats = _state(tmp_path)
    assert stats.completed == 3 and stats.visible == 6


def test_second_sigint_stops_at_once_and_releases_everything(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 9, 60)
    proc = _start(tmp_path)
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 5
    stats = _state(tmp_path)
    assert stats.completed == 0 and stats.visible == 9 and stats.leased == 0


def test_grace_period_ends_with_kill_and_release(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 6, 60)
    proc = _start(tmp_path, "--shutdown-grace-period", "1")
    _wait_for_running(tmp_path, proc, 3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert 1 <= time.monotonic() - sent < 8
    stats = _state(tmp_path)
    assert stats.visible == 6 and stats.completed == 0
    # released, not failed: the attempt was not counted, so nothing was dead-lettered
    assert stats.dead == 0


def test_simulated_spot_termination(tmp_path: Path) -> None:
    tasks = [{"id": f"f{i}", "data": {"action": "flag", "seconds": 30}} for i in range(3)]
    tasks += [{"id": f"s{i}", "data": {"action": "sleep", "seconds": 60}} for i in range(3)]
    write_tasks(tmp_path / "tasks.json", tasks)
    proc = _start(
        tmp_path,
        "--simulate-spot-termination-after",
        "1",
        "--simulate-spot-termination-delay",
        "2",
    )
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, err
    events = read_events(tmp_path / "events.jsonl")
    assert sum(e["event_type"] == "spot_termination" for e in events) == 1
    flagged = [e for e in events if e["event_type"] == "task_completed"]
    # the three polling tasks saw the notice while running and finished
    assert {e["task_id"] for e in flagged} == {"f0", "f1", "f2"}
    assert all(e["result"]["termination"] is True for e in flagged)
    stats = _state(tmp_path)
    # the sleepers never started (no new leases after the notice) and are all back in the queue
    assert stats.completed == 3 and stats.visible == 3 and stats.leased == 0


def test_spot_termination_kills_running_tasks_after_the_delay(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 3, 60)
    started = time.monotonic()
    proc = _start(
        tmp_path,
        "--simulate-spot-termination-after",
        "0.5",
        "--simulate-spot-termination-delay",
        "1",
    )
    proc.communicate(timeout=40)
    assert proc.returncode == 130
    assert time.monotonic() - started < 15
    stats = _state(tmp_path)
    assert stats.visible == 3 and stats.completed == 0 and stats.dead == 0


def test_sighup_behaves_as_sigterm(tmp_path: Path) -> None:
    _sleep_tasks(tmp_path, 9, 1.0)
    proc = _start(tmp_path)
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "completed 3 tasks in this run" in out
    events = read_events(tmp_path / "events.jsonl")
    (stopped,) = [e for e in events if e["event_type"] == "worker_stopped"]
    assert stopped["reason"] == "signal"
    stats = _state(tmp_path)
    # the running tasks finished; the rest were given back, not left leased
    assert stats.completed == 3 and stats.visible == 6 and stats.leased == 0


def test_sighup_to_the_whole_process_group_leaves_children_to_the_supervisor(
    tmp_path: Path,
) -> None:
    # A terminal that closes sends SIGHUP to every process of its session: children ignore it.
    _sleep_tasks(tmp_path, 6, 1.0)
    (tmp_path / "markers").mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BEHAVIOUR_WORKER),
            "--task-file",
            "tasks.json",
            "--num-simultaneous-tasks",
            "3",
        ],
        cwd=tmp_path,
        env=worker_env(BEHAVIOUR_MARKERS=str(tmp_path / "markers")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_running(tmp_path, proc, 3)
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    events = read_events(tmp_path / "events.jsonl")
    assert not [e for e in events if e["event_type"] == "task_exited"]
    assert len([e for e in events if e["event_type"] == "task_completed"]) == 3
    stats = _state(tmp_path)
    assert stats.completed == 3 and stats.visible == 3 and stats.leased == 0


def _name(sig: signal.Signals) -> str:
    return sig.name


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGHUP, signal.SIGHUP),
        (signal.SIGHUP, signal.SIGINT),
        (signal.SIGTERM, signal.SIGHUP),
        (signal.SIGINT, signal.SIGTERM),
    ],
    ids=_name,
)
def test_a_second_signal_of_any_kind_stops_at_once(
    tmp_path: Path, first: signal.Signals, second: signal.Signals
) -> None:
    _sleep_tasks(tmp_path, 9, 60)
    proc = _start(tmp_path)
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(first)
    time.sleep(0.3)
    proc.send_signal(second)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    stats = _state(tmp_path)
    assert stats.completed == 0 and stats.visible == 9 and stats.leased == 0


ASYNC_WORKER = """
import asyncio, sys
sys.path.insert(0, {here!r})
from behaviour_worker import process_task
from taskfleet import Worker

summary = asyncio.run(Worker(process_task).start(exit=False))
print("asyncio run ended:", summary.exit_code, summary.counts.completed)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=_name)
def test_asyncio_start_stops_gracefully_on_each_stop_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    _sleep_tasks(tmp_path, 9, 1.0)
    script = tmp_path / "async_worker.py"
    script.write_text(ASYNC_WORKER.format(here=str(BEHAVIOUR_WORKER.parent)))
    proc = _start(tmp_path, script=script)
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "asyncio run ended: 130 3" in out
    stats = _state(tmp_path)
    assert stats.completed == 3 and stats.visible == 6 and stats.leased == 0


def test_sighup_in_queue_mode_gives_every_lease_back_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with open_queue(url) as queue:
        queue.send(
            [Task(f"t{i}", {"action": "sleep", "seconds": 60}) for i in range(3)]
            + [Task(f"s{i}", {"action": "ok"}) for i in range(3)]
        )
    proc = _start_on_queue(tmp_path, url, "--shutdown-grace-period", "1")
    _wait_for_running(tmp_path, proc, 3)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "completed 0 tasks in this run" in out
    with open_queue(url) as queue:  # not held until the leases expire: back in the queue now
        stats = queue.stats()
        assert stats.leased == 0 and stats.visible == 6 and stats.dead == 0
        (message, *_) = queue.receive(6, lease_seconds=30)
        assert message.attempt == 1  # released, not counted as a failed attempt


def _start_on_queue(tmp_path: Path, url: str, *args: str):  # type: ignore[no-untyped-def]
    (tmp_path / "markers").mkdir()
    return start_worker(
        tmp_path,
        "--queue",
        url,
        "--num-simultaneous-tasks",
        "3",
        "--lease-seconds",
        "600",
        "--event-queue",
        "none",
        *args,
        env=worker_env(BEHAVIOUR_MARKERS=str(tmp_path / "markers")),
    )
