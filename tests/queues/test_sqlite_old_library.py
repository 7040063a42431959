"""The SQLite queue on a library older than 3.35 (no `RETURNING`, no `UPDATE ... FROM`), as
some Linux releases still ship: the dependency clauses and the flat protocol hold on the
fallback path too (`taskfleet.queues.sqlite.MODERN_SQL` off)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_dependencies_contract as clauses

from taskfleet.queues import Queue, open_queue
from taskfleet.queues import sqlite as sqlite_backend
from taskfleet.tasks import Task


@pytest.fixture
def old_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Queue]]:
    monkeypatch.setattr(sqlite_backend, "MODERN_SQL", False)
    opened: list[Queue] = []

    def make(*, name: str | None = None, max_attempts: int | None = None) -> Queue:
        url = f"sqlite:///{tmp_path}/q.db?name={name or 't' + uuid.uuid4().hex[:8]}"
        queue = open_queue(url, max_attempts=max_attempts)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()


@pytest.mark.parametrize(
    "clause",
    [
        clauses.test_diamond_releases_each_task_when_its_last_dependency_is_acked,
        clauses.test_fan_out_fan_in_and_the_counts_of_waiting_tasks,
        clauses.test_ack_of_a_task_already_done_releases_nothing_twice,
        clauses.test_a_dead_letter_blocks_its_dependents_until_redriven,
        clauses.test_a_task_that_waits_for_one_done_before_the_load_runs_at_once,
        clauses.test_ack_ids_releases_dependents,
    ],
    ids=lambda clause: clause.__name__.removeprefix("test_"),
)
def test_dependency_clauses(old_make: Callable[..., Queue], clause: Callable[..., None]) -> None:
    clause(old_make)


def test_reloading_a_flow(old_make: Callable[..., Queue], tmp_path: Path) -> None:
    clauses.test_loading_the_flow_again_changes_no_count(old_make, tmp_path)


def test_flat_tasks_are_acked_once(old_make: Callable[..., Queue]) -> None:
    queue = old_make()
    queue.send([Task(f"t{i}", {}) for i in range(50)])
    messages = queue.receive(50, 30)
    queue.ack(messages)
    queue.ack(messages)
    stats = queue.stats()
    assert (stats.completed, stats.remaining) == (50, 0)
