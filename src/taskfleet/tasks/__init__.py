"""Task input: what a task is (`model`), reading task files and sources (`readers`), the bulk
blocks of the fast load path (`batches`) and loading them into a queue (`loading`).

The package exports what users and the other layers need; `loading` is imported from its module
(it depends on the queues, which depend on the task model).
"""

from taskfleet.tasks.model import MAX_TASK_ID_BYTES, Task, TaskSource, task_id_problem
from taskfleet.tasks.readers import iter_tasks, load_tasks, open_task_file, validated

__all__ = [
    "MAX_TASK_ID_BYTES",
    "Task",
    "TaskSource",
    "iter_tasks",
    "load_tasks",
    "open_task_file",
    "task_id_problem",
    "validated",
]
