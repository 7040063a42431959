"""Ctrl-C, SIGTERM and spot termination, delivered to a real supervisor process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.worker.helpers import read_events, start_worker, write_tasks

from taskfleet.queues.sqlite import SQLiteQueue


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


def _start(tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    (tmp_path / "markers").mkdir()
    from tests.worker.helpers import worker_env

    return start_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "3",
        *args,
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
