"""A flow part-way through a run, by hand: the task file and the events of every state.

    prepare -> chunk-1..chunk-4 -> aggregate -> publish
                chunk-3 -> index

- prepare, chunk-1, chunk-2: completed (chunk-2 on its second attempt);
- chunk-3: one failed attempt, to be retried: running (or queued);
- chunk-4: three failed attempts, dead-lettered: failed;
- aggregate and publish: blocked by chunk-4 (publish through aggregate);
- index: waiting for chunk-3;
- redriven: dead-lettered, redriven, then completed: done (a later run wins over the dead letter).
"""

from __future__ import annotations

from typing import Any

from helpers_events import ev

CHUNKS = [f"chunk-{i}" for i in range(1, 5)]

TASKS: list[dict[str, Any]] = [
    {"id": "prepare", "data": {}},
    *({"id": c, "data": {"part": i}, "after": ["prepare"]} for i, c in enumerate(CHUNKS)),
    {"id": "aggregate", "data": {}, "after": CHUNKS},
    {"id": "publish", "data": {}, "after": ["aggregate"]},
    {"id": "index", "data": {}, "after": ["chunk-3"]},
    {"id": "redriven", "data": {}},
]

EXPECTED_STATES = {
    "prepare": "done",
    "chunk-1": "done",
    "chunk-2": "done",
    "chunk-3": "running",
    "chunk-4": "failed",
    "aggregate": "blocked",
    "publish": "blocked",
    "index": "waiting",
    "redriven": "done",
}


def _attempt(kind: str, at: float, task_id: str, attempt: int, elapsed: float, **more: Any):
    fields: dict[str, Any] = {"task_id": task_id, "attempt": attempt, "worker_id": 1 + attempt % 2}
    fields["elapsed_time"] = elapsed
    if kind == "task_completed":
        fields.update(retry=False, result={"ok": task_id})
    else:
        fields["exception"] = more.get("exception", "ValueError: bad chunk")
    return ev(kind, at, "host-a", **fields)


def flow_events() -> list[dict[str, Any]]:
    return [
        ev("worker_started", 0.0, "host-a", worker_id=1, pid=11),
        _attempt("task_completed", 2.0, "prepare", 1, 1.5),
        _attempt("task_completed", 4.0, "chunk-1", 1, 1.8),
        _attempt("task_exception", 3.0, "chunk-2", 1, 0.4),
        _attempt("task_completed", 5.5, "chunk-2", 2, 1.2),
        _attempt("task_exception", 4.5, "chunk-3", 1, 2.0),
        _attempt("task_exception", 3.1, "chunk-4", 1, 0.3),
        _attempt("task_exception", 4.2, "chunk-4", 2, 0.3),
        _attempt("task_exception", 6.0, "chunk-4", 3, 0.3),
        ev("task_dead_lettered", 6.0, "host-a", task_id="chunk-4", attempt=3),
        _attempt("task_exception", 1.0, "redriven", 1, 0.2),
        ev("task_dead_lettered", 1.0, "host-a", task_id="redriven", attempt=1),
        _attempt("task_completed", 8.0, "redriven", 2, 0.5),
    ]
