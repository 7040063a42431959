"""Marking functions and classes as tasks, and the refusal of everything unmarked at run time."""

from __future__ import annotations

import functools

import pytest
from tests.api import sample_tasks
from tests.api.sample_tasks import Multiply, add, echo

import taskfleet
from taskfleet.api.marking import NotATaskError, as_task, resolve, run_call
from taskfleet.errors import TaskfleetError
from taskfleet.tasks import Task


def test_a_marked_function_makes_tasks_and_still_runs_as_itself() -> None:
    made = add.task(2, 3, scale=10)
    assert made.data == {
        "call": "tests.api.sample_tasks:add",
        "args": [2, 3],
        "kwargs": {"scale": 10},
    }
    assert made.id.startswith("add-") and made.id == add.task(2, 3, scale=10).id
    assert add(2, 3) == 5
    assert run_call(made.data) == 50
    assert add.task_with_id("mine", 1, 1).id == "mine"


def test_a_caller_id_must_be_usable_as_a_file_name() -> None:
    with pytest.raises(TaskfleetError, match="contains '/'"):
        add.task_with_id("a/b", 1, 1)


def test_a_registered_task_round_trips_with_its_constructor_arguments() -> None:
    made = Multiply(6, b=7).to_task()
    assert made.data == {"call": "tests.api.sample_tasks:Multiply", "args": [6], "kwargs": {"b": 7}}
    assert run_call(made.data) == 42
    assert Multiply(6, b=7).payload() == made.data
    chosen = Multiply(1)
    chosen.task_id = "multiply-one"
    assert as_task(chosen).id == "multiply-one"


def test_everything_a_user_may_insert_becomes_a_task() -> None:
    assert as_task(functools.partial(add, 1, b=2)) == add.task(1, b=2)
    assert as_task({"id": "plain", "data": {"n": 1}}) == Task("plain", {"n": 1})
    assert as_task(Task("t", {})) == Task("t", {})
    with pytest.raises(NotATaskError, match="not marked as a task"):
        as_task(functools.partial(sample_tasks.unmarked, 1))
    with pytest.raises(TaskfleetError, match="the entry has no 'id'"):
        as_task({"data": {}})
    with pytest.raises(TaskfleetError, match="cannot insert 42"):
        as_task(42)


def test_only_module_level_callables_can_be_marked() -> None:
    def local() -> None:
        pass

    with pytest.raises(TaskfleetError, match="top level of a module"):
        taskfleet.task(local)
    with pytest.raises(TaskfleetError, match="top level of a module"):
        taskfleet.task(lambda: None)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ("os:system", "not marked as a task"),
        ("builtins:eval", "not marked as a task"),
        ("tests.api.sample_tasks:unmarked", "not marked as a task"),
        ("tests.api.sample_tasks:echo.__globals__", "cannot find|not marked"),
        ("no_such_module_here:f", "cannot find no_such_module_here:f"),
        ("os.system", "module:qualname"),
        (42, "module:qualname"),
    ],
)
def test_a_message_naming_anything_unmarked_is_refused(call: object, words: str) -> None:
    with pytest.raises(NotATaskError, match=words):
        resolve(call)


def test_the_mark_cannot_be_faked_by_a_message() -> None:
    with pytest.raises(NotATaskError):
        run_call({"call": "os:system", "args": ["true"], "kwargs": {}})
    with pytest.raises(NotATaskError, match="not a code-task"):
        run_call(["os:system"])
    assert run_call(echo.task({1, 2}).data) == "{1, 2}"
