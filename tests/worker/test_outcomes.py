"""Every way a task can end, run through real worker processes: the event, the retry decision
and the final state of the task in the embedded queue."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from tests.worker.helpers import events_of, read_events, run_worker, write_tasks

from taskfleet.queues.sqlite import SQLiteQueue


def _run(tmp_path: Path, tasks: list[dict], *args: str) -> tuple[int, list[dict], str]:
    write_tasks(tmp_path / "tasks.json", tasks)
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--num-simultaneous-tasks",
        "2",
        "--backoff-base",
        "0.05",
        "--backoff-cap",
        "0.2",
        *args,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, read_events(tmp_path / "events.jsonl"), proc.stdout + proc.stderr


def _dead_letters(tmp_path: Path) -> dict[str, str | None]:
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        return {d.task.id: d.error for d in queue.dead_letters()}


def test_success_is_completed_and_acked(tmp_path: Path) -> None:
    code, events, output = _run(tmp_path, [{"id": "a", "data": {"action": "ok"}}])
    assert code == 0, output
    (done,) = events_of(events, "a")
    assert done["event_type"] == "task_completed"
    assert done["retry"] is False
    assert done["result"]["task"] == "a"
    assert done["attempt"] == 1 and done["elapsed_time"] >= 0
    assert "completed 1 task in this run" in output
    with SQLiteQueue(tmp_path / "events.state.db") as queue:
        assert queue.stats().completed == 1


def test_retry_true_is_retried_until_attempts_are_spent(tmp_path: Path) -> None:
    code, events, output = _run(
        tmp_path, [{"id": "r", "data": {"action": "retry"}}], "--max-attempts", "3"
    )
    assert code == 2, output
    attempts = [e for e in events_of(events, "r") if e["event_type"] == "task_completed"]
    assert [e["attempt"] for e in attempts] == [1, 2, 3]
    assert all(e["retry"] is True for e in attempts)
    assert events_of(events, "r")[-1]["event_type"] == "task_dead_lettered"
    assert "r" in _dead_letters(tmp_path)
    assert "completed 0 tasks" in output


def test_retry_once_then_success(tmp_path: Path) -> None:
    code, events, _ = _run(tmp_path, [{"id": "r1", "data": {"action": "retry_once"}}])
    assert code == 0
    assert [(e["attempt"], e["retry"]) for e in events_of(events, "r1")] == [(1, True), (2, False)]


def test_backoff_delays_are_observed(tmp_path: Path) -> None:
    write_tasks(tmp_path / "tasks.json", [{"id": "r", "data": {"action": "retry"}}])
    proc = run_worker(
        tmp_path,
        "--task-file",
        "tasks.json",
        "--max-attempts",
        "3",
        "--backoff-base",
        "0.4",
        "--backoff-cap",
        "10",
    )
    assert proc.returncode == 2
    stamps = [
        e["timestamp"]
        for e in events_of(read_events(tmp_path / "events.jsonl"), "r")
        if e["event_type"] == "task_completed"
    ]
    from datetime import datetime

    times = [datetime.fromisoformat(s).timestamp() for s in stamps]
    # full jitter between half and all of base * 2**(attempt-1): at least 0.2 s, then 0.4 s
    assert times[1] - times[0] >= 0.2
    assert times[2] - times[1] >= 0.4


def test_exception_is_reported_and_dead_lettered_without_retry(tmp_path: Path) -> None:
    code, events, _ = _run(tmp_path, [{"id": "x", "data": {"action": "raise"}}])
    assert code == 2
    failure, dead = events_of(events, "x")
    assert failure["event_type"] == "task_exception"
    assert failure["exception"] == "ValueError: bad input in x"
    assert "Traceback" in failure["stack_trace"]
    assert dead["event_type"] == "task_dead_lettered"
    assert _dead_letters(tmp_path)["x"] == "ValueError: bad input in x"


def test_exception_is_retried_with_retry_on_exception(tmp_path: Path) -> None:
    code, events, _ = _run(
        tmp_path,
        [{"id": "x", "data": {"action": "raise"}}],
        "--retry-on-exception",
        "--max-attempts",
        "2",
    )
    assert code == 2
    kinds = [(e["event_type"], e["attempt"]) for e in events_of(events, "x")]
    assert kinds == [("task_exception", 1), ("task_exception", 2), ("task_dead_lettered", 2)]


@pytest.mark.parametrize(
    ("data", "exit_code"),
    [
        ({"action": "exit"}, 3),
        ({"action": "os_exit", "code": 3}, 3),
        ({"action": "os_exit"}, 0),
        ({"action": "segfault"}, -11),
    ],
)
def test_exits_and_crashes_are_isolated_and_retried(
    tmp_path: Path, data: dict, exit_code: int
) -> None:
    tasks = [{"id": "bad", "data": data}] + [
        {"id": f"ok{i}", "data": {"action": "ok"}} for i in range(20)
    ]
    code, events, output = _run(tmp_path, tasks, "--max-attempts", "2")
    assert code == 2, output
    exits = [e for e in events_of(events, "bad") if e["event_type"] == "task_exited"]
    assert [e["exit_code"] for e in exits] == [exit_code, exit_code]
    assert [e["attempt"] for e in exits] == [1, 2]
    completed = {e["task_id"] for e in events if e["event_type"] == "task_completed"}
    assert completed == {f"ok{i}" for i in range(20)}
    assert "bad" in _dead_letters(tmp_path)


def test_no_retry_on_exit_dead_letters_at_once(tmp_path: Path) -> None:
    code, events, _ = _run(
        tmp_path, [{"id": "e", "data": {"action": "os_exit", "code": 3}}], "--no-retry-on-exit"
    )
    assert code == 2
    assert [e["event_type"] for e in events_of(events, "e")] == [
        "task_exited",
        "task_dead_lettered",
    ]


def test_sys_exit_in_a_task_is_an_exit_that_records_what_was_raised(tmp_path: Path) -> None:
    """rms-cloud-tasks ran a process per task, so sys.exit() there was the task's process
    exiting: ported workers rely on that (its exceptions example does). It stays an exit under
    the exit policy, and the event now says what was raised."""
    code, events, output = _run(
        tmp_path, [{"id": "x", "data": {"action": "exit"}}], "--max-attempts", "2"
    )
    assert code == 2, output
    exits = [e for e in events_of(events, "x") if e["event_type"] == "task_exited"]
    assert [(e["attempt"], e["exit_code"], e["exception"]) for e in exits] == [
        (1, 3, "SystemExit: 3"),
        (2, 3, "SystemExit: 3"),
    ]
    assert "sys.exit" in exits[0]["stack_trace"]
    assert "SystemExit: 3" in _dead_letters(tmp_path)["x"]


RAISED = [
    ("keyboard_interrupt", "KeyboardInterrupt"),
    ("broken_str", "BrokenStr: (its message could not be read: RuntimeError in __str__)"),
]


@pytest.mark.parametrize(("action", "exception"), RAISED)
def test_what_else_a_task_raises_is_an_exception_not_an_exit(
    tmp_path: Path, action: str, exception: str
) -> None:
    tasks = [{"id": "bad", "data": {"action": action}}] + [
        {"id": f"ok{i}", "data": {"action": "ok"}} for i in range(5)
    ]
    code, events, output = _run(tmp_path, tasks, "--max-attempts", "3")
    assert code == 2, output
    # under the exception policy: not retried by default, although exits are
    failure, dead = events_of(events, "bad")
    assert failure["event_type"] == "task_exception"
    assert failure["exception"] == exception
    assert "Traceback" in failure["stack_trace"]
    assert dead["event_type"] == "task_dead_lettered" and dead["exception"] == exception
    assert _dead_letters(tmp_path)["bad"] == exception
    completed = {e["task_id"] for e in events if e["event_type"] == "task_completed"}
    assert completed == {f"ok{i}" for i in range(5)}


@pytest.mark.parametrize(("action", "exception"), RAISED)
def test_what_a_task_raises_is_retried_with_retry_on_exception(
    tmp_path: Path, action: str, exception: str
) -> None:
    code, events, _ = _run(
        tmp_path,
        [{"id": "bad", "data": {"action": action}}],
        "--retry-on-exception",
        "--no-retry-on-exit",
        "--max-attempts",
        "2",
    )
    assert code == 2
    kinds = [(e["event_type"], e["attempt"], e["exception"]) for e in events_of(events, "bad")]
    assert kinds == [
        ("task_exception", 1, exception),
        ("task_exception", 2, exception),
        ("task_dead_lettered", 2, exception),
    ]


def test_a_result_whose_repr_raises_is_a_task_error(tmp_path: Path) -> None:
    code, events, _ = _run(tmp_path, [{"id": "r", "data": {"action": "broken_repr"}}])
    assert code == 2
    failure, _ = events_of(events, "r")
    assert failure["event_type"] == "task_exception"
    assert failure["exception"].startswith("TypeError: the result of process_task is not JSON")
    assert failure["exception"].endswith("<set object, whose repr() raised>")


def test_timeout_kills_the_task_and_its_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    tasks = [{"id": "slow", "data": {"action": "spawn_sleep", "pidfile": str(pidfile)}}]
    started = time.monotonic()
    code, events, output = _run(tmp_path, tasks, "--max-runtime", "1.5")
    assert time.monotonic() - started < 20
    assert code == 2, output
    timed_out, dead = events_of(events, "slow")
    assert timed_out["event_type"] == "task_timed_out"
    assert 1.5 <= timed_out["elapsed_time"] < 5
    assert dead["event_type"] == "task_dead_lettered"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        assert not psutil.pid_exists(grandchild), "the grandchild survived the timeout kill"


def test_timeout_is_retried_with_retry_on_timeout(tmp_path: Path) -> None:
    tasks = [{"id": "s", "data": {"action": "sleep", "seconds": 30}}]
    code, events, _ = _run(
        tmp_path, tasks, "--max-runtime", "0.5", "--retry-on-timeout", "--max-attempts", "2"
    )
    assert code == 2
    kinds = [(e["event_type"], e["attempt"]) for e in events_of(events, "s")]
    assert kinds == [("task_timed_out", 1), ("task_timed_out", 2), ("task_dead_lettered", 2)]


def test_a_result_that_is_not_json_is_recorded_as_its_str(tmp_path: Path) -> None:
    tasks = [
        {"id": "p", "data": {"action": "path"}},
        {"id": "n", "data": {"action": "nonjson"}},
        {"id": "ok", "data": {"action": "ok"}},
    ]
    code, events, _ = _run(tmp_path, tasks)
    assert code == 0
    (path,) = events_of(events, "p")
    assert path["event_type"] == "task_completed"
    assert path["result"] == "results/p.txt"
    assert path["result_type"] == "PosixPath"
    (as_set,) = events_of(events, "n")
    assert (as_set["result"], as_set["result_type"]) == ("{1, 2, 3}", "set")
    (ok,) = events_of(events, "ok")
    assert "result_type" not in ok


def test_a_result_whose_str_fails_is_a_task_error(tmp_path: Path) -> None:
    code, events, _ = _run(tmp_path, [{"id": "u", "data": {"action": "unprintable"}}])
    assert code == 2
    failure = events_of(events, "u")[0]
    assert failure["event_type"] == "task_exception"
    assert "not JSON and its str() failed (RuntimeError)" in failure["exception"]


def test_memory_error_under_the_memory_cap(tmp_path: Path) -> None:
    code, events, _ = _run(
        tmp_path, [{"id": "m", "data": {"action": "memory"}}], "--max-memory-per-task", "1"
    )
    assert code == 2
    failure = events_of(events, "m")[0]
    assert failure["event_type"] == "task_exception"
    assert failure["exception"].startswith("MemoryError")
    assert "--max-memory-per-task" in failure["exception"]


def test_max_tasks_per_child_recycles_children(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i}", "data": {"action": "ok"}} for i in range(30)]
    code, events, _ = _run(tmp_path, tasks, "--max-tasks-per-child", "5")
    assert code == 0
    done = [e for e in events if e["event_type"] == "task_completed"]
    assert len(done) == 30
    pids = {e["result"]["pid"] for e in done}
    assert len(pids) >= 6  # 30 tasks, at most 5 per process
    per_pid = {p: sum(1 for e in done if e["result"]["pid"] == p) for p in pids}
    assert max(per_pid.values()) <= 5


def test_process_per_task_uses_a_fresh_process_each_time(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i}", "data": {"action": "ok"}} for i in range(8)]
    code, events, _ = _run(tmp_path, tasks, "--process-per-task")
    assert code == 0
    pids = [e["result"]["pid"] for e in events if e["event_type"] == "task_completed"]
    assert len(set(pids)) == 8
    assert os.getpid() not in pids


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process `pid` ended (or is only a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("recycle", [("--process-per-task",), ("--max-tasks-per-child", "1")])
def test_a_thread_left_running_does_not_keep_a_finished_child_alive(
    tmp_path: Path, recycle: tuple[str, ...]
) -> None:
    tasks = [{"id": f"t{i}", "data": {"action": "timer_thread"}} for i in range(6)]
    started = time.monotonic()
    code, events, output = _run(tmp_path, tasks, *recycle)
    assert code == 0, output
    assert time.monotonic() - started < 30
    assert sorted(e["task_id"] for e in events if e["event_type"] == "task_completed") == [
        f"t{i}" for i in range(6)
    ]


def test_a_task_that_forks_without_exec_is_reported_once(tmp_path: Path) -> None:
    tasks = [{"id": f"f{i}", "data": {"action": "fork"}} for i in range(20)]
    started = time.monotonic()
    code, events, output = _run(tmp_path, tasks)
    assert code == 0, output
    assert time.monotonic() - started < 30
    completed = [e for e in events if e["event_type"] == "task_completed"]
    assert sorted(e["task_id"] for e in completed) == sorted(f"f{i}" for i in range(20))
    # every outcome came from the child itself, none from the copy the task forked
    assert all(e["result"]["pid"] == e["pid"] for e in completed), completed
    assert "unexpected task" not in output


def test_a_grandchild_in_its_own_session_ends_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    tasks = [
        {"id": "slow", "data": {"action": "session_sleep", "pidfile": str(pidfile), "seconds": 60}}
    ]
    code, events, output = _run(tmp_path, tasks, "--max-runtime", "1")
    assert code == 2, output
    assert events_of(events, "slow")[0]["event_type"] == "task_timed_out"
    assert _gone(int(pidfile.read_text())), "a grandchild in a new session survived the timeout"


def test_what_a_finished_task_left_running_ends_with_the_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    tasks = [{"id": "leaves", "data": {"action": "session_sleep", "pidfile": str(pidfile)}}]
    code, events, output = _run(tmp_path, tasks)
    assert code == 0, output
    assert events_of(events, "leaves")[0]["event_type"] == "task_completed"
    assert _gone(int(pidfile.read_text())), "a daemon a task started outlived the run"
