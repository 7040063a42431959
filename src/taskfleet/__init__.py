"""taskfleet: run large batches of independent tasks in parallel, locally or on a fleet.

`from taskfleet import Worker, WorkerData` is the user API, and for tasks built in code `task`
(or `queueable`), `RegisteredTask`, `TaskQueue` and `LocalTaskQueue` (see `taskfleet.api`), and
for tasks that wait for others `Flow` and `dependency_results`. Every name below except the errors
is imported on first use, so `import taskfleet` costs next to nothing (and never imports a
cloud SDK), and a worker imports only what its run needs at start (see "Start-up" in
docs/design-notes.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskfleet.errors import TaskFileError, TaskfleetError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskfleet.api import LocalTaskQueue, RegisteredTask, TaskQueue, queueable, task
    from taskfleet.api.context import dependency_results
    from taskfleet.api.flow import Flow, FlowTask
    from taskfleet.tasks import Task, iter_tasks, load_tasks
    from taskfleet.worker.worker import Worker, WorkerData

# name -> the module that defines it
_LAZY = {
    "Task": "taskfleet.tasks",
    "iter_tasks": "taskfleet.tasks",
    "load_tasks": "taskfleet.tasks",
    "Worker": "taskfleet.worker.worker",
    "WorkerData": "taskfleet.worker.worker",
    "task": "taskfleet.api.marking",
    "queueable": "taskfleet.api.marking",
    "RegisteredTask": "taskfleet.api.marking",
    "TaskQueue": "taskfleet.api.task_queue",
    "LocalTaskQueue": "taskfleet.api.local",
    "Flow": "taskfleet.api.flow",
    "FlowTask": "taskfleet.api.flow",
    "dependency_results": "taskfleet.api.context",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskfleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Flow",
    "FlowTask",
    "LocalTaskQueue",
    "RegisteredTask",
    "Task",
    "TaskFileError",
    "TaskQueue",
    "TaskfleetError",
    "Worker",
    "WorkerData",
    "__version__",
    "dependency_results",
    "iter_tasks",
    "load_tasks",
    "queueable",
    "task",
]
