"""`taskfleet.Flow`: the tasks it builds, its refusals, and runs on this machine's runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.flows.flow_tasks import Square, aggregate, not_a_task, prepare, process

import taskfleet
from taskfleet.api.marking import NotATaskError
from taskfleet.errors import TaskfleetError
from taskfleet.tasks import load_tasks


def build(groups: int = 1, parts: int = 4) -> tuple[taskfleet.Flow, list[taskfleet.FlowTask]]:
    flow = taskfleet.Flow()
    totals = []
    for group in range(groups):
        prep = flow.add(prepare, 1000 + group)
        chunks = [flow.add(process, group * 10 + i, after=[prep]) for i in range(parts)]
        totals.append(flow.add(aggregate, after=chunks))
    return flow, totals


def test_a_flow_is_the_task_list_form_in_the_order_added() -> None:
    flow, (total,) = build()
    tasks = flow.tasks
    assert len(flow) == 6
    prep, *parts, last = tasks
    assert prep.after == ()
    assert prep.data == {"call": "tests.flows.flow_tasks:prepare", "args": [1000], "kwargs": {}}
    assert [part.after for part in parts] == [(prep.id,)] * 4
    assert last.id == total.id
    assert last.after == tuple(part.id for part in parts)


def test_ids_are_the_same_for_the_same_flow_and_differ_by_what_a_task_waits_for() -> None:
    first, totals = build(groups=2)
    second, _ = build(groups=2)
    assert [task.id for task in first] == [task.id for task in second]
    assert totals[0].id != totals[1].id  # the same call, waiting for other tasks
    assert totals[0].id.startswith("aggregate-")


def test_ids_can_be_chosen_and_registered_tasks_are_taken() -> None:
    flow = taskfleet.Flow()
    a = flow.add(Square(3), task_id="square-3")
    b = flow.add(process, 2, after=a, task_id="process-2")
    assert [(task.id, task.after) for task in flow] == [
        ("square-3", ()),
        ("process-2", ("square-3",)),
    ]
    assert str(b) == "process-2"


def test_refusals_name_what_is_wrong() -> None:
    flow = taskfleet.Flow()
    prep = flow.add(prepare, 1)
    with pytest.raises(TaskfleetError, match="already in the flow"):
        flow.add(prepare, 1)
    with pytest.raises(TaskfleetError, match="'elsewhere', which is not a task of this flow"):
        flow.add(process, 1, after=[prep, "elsewhere"])
    with pytest.raises(NotATaskError, match=r"only functions decorated with @taskfleet\.task"):
        flow.add(not_a_task, 1)
    with pytest.raises(TaskfleetError, match="carries its arguments already"):
        flow.add(Square(2), 5)
    with pytest.raises(TaskfleetError, match=r"argument 'part'"):
        flow.add(process, object())
    assert len(flow) == 1  # nothing was added by a refused call


def test_a_flow_written_as_a_file_reads_back_as_the_same_tasks(tmp_path: Path) -> None:
    flow, _ = build(groups=2)
    for name in ("job.flow", "job.json", "job.jsonl"):
        flow.write(tmp_path / name)
        assert sorted(load_tasks(tmp_path / name), key=lambda t: t.id) == sorted(
            flow.tasks, key=lambda t: t.id
        )


def test_dependency_results_outside_a_task_says_where_it_works() -> None:
    with pytest.raises(TaskfleetError, match="only inside a code-task run by a worker"):
        taskfleet.dependency_results()


def test_a_flow_without_dependencies_runs_and_its_tasks_see_no_results() -> None:
    flow = taskfleet.Flow()
    squares = [flow.add(process, i) for i in range(3)]
    alone = flow.add(aggregate)
    run = flow.run(parallel=2)
    assert run.exit_code == 0, run.errors
    assert [run.results[s.id] for s in squares] == [0, 1, 4]
    assert run.results[alone.id] == {"total": 0, "seen": []}


def test_a_flow_runs_locally_with_results_passed_down() -> None:
    flow, totals = build(groups=2, parts=4)
    run = flow.run(parallel=2)
    assert run.exit_code == 0, run.errors
    assert run.completed == 12
    squares = [i * i for i in range(4)]
    assert run.results[totals[0].id]["total"] == sum(squares)
    assert run.results[totals[1].id]["total"] == sum((10 + i) ** 2 for i in range(4))


def test_a_flow_inserted_into_a_queue_then_worked(tmp_path: Path) -> None:
    flow, (total,) = build()
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = flow.insert(url)
    assert result is not None and result.inserted == 6
    assert flow.insert(url).inserted == 0  # the same flow again inserts nothing
    local = taskfleet.LocalTaskQueue(2)
    flow.insert(local)
    run = local.execute()
    assert run.results[total.id]["total"] == 0 + 1 + 4 + 9
