"""Code-tasks of the flow tests: prepare -> parts -> aggregate, the last reading its
dependencies' results through `taskfleet.dependency_results()`."""

from __future__ import annotations

from typing import Any

import taskfleet


@taskfleet.task
def prepare(rows: int) -> dict[str, int]:
    return {"rows": rows}


@taskfleet.task
def process(part: int) -> int:
    return part * part


@taskfleet.task
def aggregate() -> dict[str, Any]:
    results = taskfleet.dependency_results()
    return {"total": sum(value for value in results.values() if isinstance(value, int)),
            "seen": sorted(results)}  # fmt: skip


def not_a_task(part: int) -> int:
    return part


class Square(taskfleet.RegisteredTask):
    def __init__(self, n: int) -> None:
        self.n = n

    def execute(self) -> int:
        return self.n * self.n
