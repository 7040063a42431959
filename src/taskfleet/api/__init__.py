"""The Python API for tasks built in code (what python-task-queue users know).

- `task` (also `queueable`) and `RegisteredTask` mark functions and classes as tasks
  (`marking`), whose arguments travel as JSON by the rules of `payload`;
- `TaskQueue(url)` inserts them into any queue (`task_queue`) and runs them in this process
  (`polling`);
- `LocalTaskQueue(parallel=N)` runs them on this machine's worker runtime (`local`);
- `Flow` builds tasks that wait for others (`flow`), and `dependency_results()` gives a task
  what they returned (`context`).

Names are imported on first use, so marking a function does not import the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskfleet.api.context import dependency_results
    from taskfleet.api.flow import Flow, FlowTask
    from taskfleet.api.local import LocalRun, LocalTaskQueue, NothingRanWarning
    from taskfleet.api.marking import (
        NotATaskError,
        RegisteredTask,
        process_code_task,
        queueable,
        task,
    )
    from taskfleet.api.payload import PayloadError
    from taskfleet.api.task_queue import Count, InsertResult, TaskQueue

# name -> the module that defines it
_LAZY = {
    "task": "taskfleet.api.marking",
    "queueable": "taskfleet.api.marking",
    "RegisteredTask": "taskfleet.api.marking",
    "NotATaskError": "taskfleet.api.marking",
    "process_code_task": "taskfleet.api.marking",
    "PayloadError": "taskfleet.api.payload",
    "TaskQueue": "taskfleet.api.task_queue",
    "Count": "taskfleet.api.task_queue",
    "InsertResult": "taskfleet.api.task_queue",
    "LocalTaskQueue": "taskfleet.api.local",
    "Flow": "taskfleet.api.flow",
    "FlowTask": "taskfleet.api.flow",
    "dependency_results": "taskfleet.api.context",
    "LocalRun": "taskfleet.api.local",
    "NothingRanWarning": "taskfleet.api.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskfleet.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Count",
    "Flow",
    "FlowTask",
    "InsertResult",
    "LocalRun",
    "LocalTaskQueue",
    "NotATaskError",
    "NothingRanWarning",
    "PayloadError",
    "RegisteredTask",
    "TaskQueue",
    "dependency_results",
    "process_code_task",
    "queueable",
    "task",
]
