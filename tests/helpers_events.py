"""Helpers for the events, stats, monitor and report tests (and the monitor benchmark).

`synthetic_events` simulates a fleet: hosts with worker slots that take tasks from one queue,
with failures, retries, dead letters and duplicate deliveries, and returns the events the
runtime would write. It is deterministic for a seed.
"""

from __future__ import annotations

import heapq
import random
import shutil
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def ts(seconds: float, start: datetime = START) -> str:
    """The event timestamp `seconds` after `start`, formatted as the runtime writes it."""
    return (start + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def ev(event_type: str, at: float, host: str = "host-a", **fields: Any) -> dict[str, Any]:
    """A hand-written event at `at` seconds after START (None fields are dropped)."""
    event = {"timestamp": ts(at), "hostname": host, "event_type": event_type}
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


def write_events(path: Path, events: Iterable[dict[str, Any]]) -> Path:
    with open(path, "wb") as f:
        for event in events:
            f.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
    return path


def write_tasks(path: Path, task_ids: Iterable[str]) -> Path:
    with open(path, "wb") as f:
        for task_id in task_ids:
            f.write(orjson.dumps({"id": task_id, "data": {"n": task_id}}))
            f.write(b"\n")
    return path


# The fixture, by hand (times in seconds after 2025-01-01T00:00:00Z):
#   t1: completed on attempt 1 (1.0 s); the same event again (a duplicate record)
#   t2: ValueError on attempt 1, completed on attempt 2 (3.0 s)
#   t3: timed out (1), exited -9 (2), KeyError (3), dead-lettered      -> dead letter
#   t4: completed on attempt 1 (2.0 s) and again on attempt 2 (4.0 s)  -> more than once
#   t5: completed asking for a retry (5.0 s)                            -> not completed
#   t6: in the task file, never ran                                     -> not completed
#   x9: completed (6.0 s) but not in the task file
FIXTURE = [
    ev("worker_started", 0.0, "host-a", worker_id=1, pid=11),
    ev("worker_started", 0.0, "host-b", worker_id=1, pid=21),
    ev(
        "task_completed",
        10.0,
        "host-a",
        task_id="t1",
        attempt=1,
        worker_id=1,
        elapsed_time=1.0,
        retry=False,
        result="ok",
    ),
    ev(
        "task_exception",
        11.0,
        "host-b",
        task_id="t2",
        attempt=1,
        worker_id=1,
        elapsed_time=0.2,
        exception="ValueError: bad input 7",
        stack_trace="Traceback...",
    ),
    ev("task_timed_out", 12.0, "host-a", task_id="t3", attempt=1, worker_id=1, elapsed_time=9.0),
    ev(
        "task_completed",
        13.0,
        "host-a",
        task_id="t4",
        attempt=1,
        worker_id=1,
        elapsed_time=2.0,
        retry=False,
    ),
    ev(
        "task_completed",
        10.0,
        "host-a",
        task_id="t1",
        attempt=1,
        worker_id=1,
        elapsed_time=1.0,
        retry=False,
        result="ok",
    ),
    ev(
        "task_completed",
        14.0,
        "host-b",
        task_id="t2",
        attempt=2,
        worker_id=1,
        elapsed_time=3.0,
        retry=False,
    ),
    ev(
        "task_exited",
        15.0,
        "host-b",
        task_id="t3",
        attempt=2,
        worker_id=1,
        elapsed_time=0.1,
        exit_code=-9,
    ),
    ev("non_fatal_exception", 15.5, "host-b", exception="OSError: disk full (while saving)"),
    ev(
        "task_completed",
        16.0,
        "host-b",
        task_id="t4",
        attempt=2,
        worker_id=1,
        elapsed_time=4.0,
        retry=False,
    ),
    ev(
        "task_exception",
        17.0,
        "host-a",
        task_id="t3",
        attempt=3,
        worker_id=1,
        elapsed_time=0.3,
        exception="KeyError: 'k'",
    ),
    ev("task_dead_lettered", 17.0, "host-a", task_id="t3", attempt=3, worker_id=1),
    ev(
        "task_completed",
        18.0,
        "host-b",
        task_id="t5",
        attempt=1,
        worker_id=1,
        elapsed_time=5.0,
        retry=True,
    ),
    ev(
        "task_completed",
        19.0,
        "host-b",
        task_id="x9",
        attempt=1,
        worker_id=1,
        elapsed_time=6.0,
        retry=False,
    ),
    ev("fatal_exception", 20.0, "host-b", exception="RuntimeError: supervisor died"),
]
TASK_IDS = ["t1", "t2", "t3", "t4", "t5", "t6"]


def synthetic_events(
    n_tasks: int,
    *,
    hosts: int = 3,
    workers_per_host: int = 4,
    seed: int = 0,
    p_exception: float = 0.03,
    p_timeout: float = 0.01,
    p_exit: float = 0.01,
    p_duplicate: float = 0.005,
    max_attempts: int = 3,
    mean_elapsed: float = 1.0,
    max_runtime: float = 10.0,
    start: datetime = START,
) -> list[dict[str, Any]]:
    """Events of a simulated run, in timestamp order."""
    rng = random.Random(seed)
    pending: list[tuple[str, int]] = [(f"task-{i:07d}", 1) for i in range(n_tasks)]
    pending.reverse()  # pop() takes task-0000000 first
    retry_queue: list[tuple[float, int, str, int]] = []  # (visible at, seq, task, attempt)
    slots = [
        (0.0 + 0.01 * i, f"host-{h:02d}", w)
        for h in range(hosts)
        for i, w in enumerate(range(1, workers_per_host + 1))
    ]
    heapq.heapify(slots)
    events: list[dict[str, Any]] = []
    pids: dict[tuple[str, int], int] = {}
    exceptions = [
        ("ValueError", "invalid literal for int() with base 10: 'x'"),
        ("ZeroDivisionError", "division by zero"),
        ("KeyError", "'missing'"),
    ]
    seq = 0
    for _, host, w in slots:
        pids[(host, w)] = 1000 + len(pids)
        events.append(
            {
                "timestamp": ts(0, start),
                "hostname": host,
                "event_type": "worker_started",
                "worker_id": w,
                "pid": pids[(host, w)],
            }
        )
    last = 0.0
    while slots:
        free_at, host, w = heapq.heappop(slots)
        if retry_queue and retry_queue[0][0] <= free_at:
            _, _, task_id, attempt = heapq.heappop(retry_queue)
        elif pending:
            task_id, attempt = pending.pop()
        elif retry_queue:
            visible, _, task_id, attempt = heapq.heappop(retry_queue)
            free_at = max(free_at, visible)
        else:
            continue  # this slot is done
        pid = pids[(host, w)]
        r = rng.random()
        base = {
            "hostname": host,
            "task_id": task_id,
            "attempt": attempt,
            "worker_id": w,
            "pid": pid,
        }
        if r < p_timeout:
            elapsed = max_runtime
            event = {"event_type": "task_timed_out", **base}
        else:
            elapsed = min(rng.lognormvariate(0, 0.5) * mean_elapsed, max_runtime * 0.99)
            if r < p_timeout + p_exception:
                name, message = rng.choice(exceptions)
                event = {
                    "event_type": "task_exception",
                    **base,
                    "exception": f"{name}: {message}",
                    "stack_trace": f'Traceback (most recent call last):\n  File "w.py", '
                    f"line 9, in process_task\n{name}: {message}\n",
                }
            elif r < p_timeout + p_exception + p_exit:
                event = {"event_type": "task_exited", **base, "exit_code": 1}
            else:
                event = {
                    "event_type": "task_completed",
                    **base,
                    "retry": False,
                    "result": f"results/{task_id}.txt",
                }
        end = free_at + elapsed
        event = {"timestamp": ts(end, start), **event, "elapsed_time": round(elapsed, 6)}
        # Field order as the runtime writes them.
        ordered = {k: event[k] for k in ("timestamp", "hostname", "event_type") if k in event}
        ordered.update(event)
        events.append(ordered)
        if event["event_type"] == "task_completed":
            if rng.random() < p_duplicate:
                seq += 1
                heapq.heappush(retry_queue, (end + 0.5, seq, task_id, attempt + 1))
        elif attempt < max_attempts:
            seq += 1
            heapq.heappush(retry_queue, (end + 2.0**attempt, seq, task_id, attempt + 1))
        else:
            events.append(
                {
                    "timestamp": ts(end + 0.0001, start),
                    "hostname": host,
                    "event_type": "task_dead_lettered",
                    "task_id": task_id,
                    "attempt": attempt,
                    "worker_id": w,
                    "pid": pid,
                }
            )
        last = max(last, end)
        heapq.heappush(slots, (end + 0.002, host, w))
    for (host, w), pid in pids.items():
        events.append(
            {
                "timestamp": ts(last + 0.1, start),
                "hostname": host,
                "event_type": "worker_stopped",
                "worker_id": w,
                "pid": pid,
            }
        )
    events.sort(key=lambda e: e["timestamp"])
    return events


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
