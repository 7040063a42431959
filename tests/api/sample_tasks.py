"""Tasks the API tests queue and run: marked functions, a RegisteredTask, and an unmarked one."""

from __future__ import annotations

from typing import Any

import taskfleet


@taskfleet.task
def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


@taskfleet.queueable
def echo(value: Any) -> Any:
    """Returns what it got, as JSON would show it (the tagged types by their repr)."""
    return repr(value)


@taskfleet.task
def fail(message: str) -> None:
    raise ValueError(message)


class Multiply(taskfleet.RegisteredTask):
    """python-task-queue style: arguments passed to `super().__init__` too."""

    def __init__(self, a: int, b: int = 2) -> None:
        super().__init__(a, b)
        self.a = a
        self.b = b

    def execute(self) -> int:
        return self.a * self.b


def unmarked(value: Any) -> Any:
    return value


@taskfleet.task
def sleep_then(seconds: float, value: Any) -> Any:
    """Sleeps, then returns `value`: a task that overruns a short `max_runtime`."""
    import time

    time.sleep(seconds)
    return value


@taskfleet.task
def fail_first(marker: str) -> str:
    """Raises on its first attempt (it leaves `marker` behind), returns on the next."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt")
    return "second attempt"


@taskfleet.task
def sum_of_dependencies() -> int:
    """The sum of what the tasks this one waits for returned (a missing result fails it)."""
    return sum(taskfleet.dependency_results().values())
