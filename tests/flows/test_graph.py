"""The check of a load's dependencies (`taskfleet.flows.graph`), on its own: each error names
the culprit and its place, and big or deep graphs are checked without recursion and in
linear time."""

from __future__ import annotations

import pytest

from taskfleet.errors import TaskFileError
from taskfleet.flows.graph import DependencyGraph, find_cycle, in_cycles


def graph_of(edges: dict[str, list[str]], plain: tuple[str, ...] = ()) -> DependencyGraph:
    graph = DependencyGraph()
    for task_id in plain:
        graph.add(task_id)
    for task_id, after in edges.items():
        graph.add(task_id, after, f"tasks.jsonl: line {len(graph.ids) + 1}")
    return graph


def test_an_ordered_flow_passes() -> None:
    graph = graph_of({"b": ["a"], "c": ["a"], "d": ["b", "c"]}, plain=("a",))
    graph.check()
    assert graph.dependents() == {"a": ["b", "c"], "b": ["d"], "c": ["d"]}


def test_a_flow_listed_backwards_passes_too() -> None:
    graph_of({"d": ["b", "c"], "b": ["a"], "c": ["a"]}, plain=("a",)).check()


def test_a_task_that_waits_for_itself_is_named() -> None:
    with pytest.raises(TaskFileError, match=r"line 2: task 'x' waits for itself"):
        graph_of({"x": ["a", "x"]}, plain=("a",)).check()


def test_unknown_ids_are_named_and_the_queue_is_asked_once() -> None:
    asked: list[set[str]] = []

    def exists(ids: object) -> set[str]:
        asked.append(set(ids))  # type: ignore[call-overload]
        return {"in-queue"}

    graph = graph_of({"b": ["a", "in-queue"], "c": ["nope", "gone"]}, plain=("a",))
    with pytest.raises(TaskFileError) as caught:
        graph.check(exists=exists)
    assert asked == [{"in-queue", "nope", "gone"}]
    assert "task 'c' waits for 'nope', 'gone', which no task of the load has" in str(caught.value)
    graph_of({"b": ["in-queue"]}).check(exists=exists)


def test_the_cycle_is_shown_in_order() -> None:
    graph = graph_of({"p": ["q"], "q": ["r"], "r": ["p"], "s": ["p"]})
    with pytest.raises(TaskFileError) as caught:
        graph.check()
    path = str(caught.value).split("run: ")[1].split(" (")[0].split(" -> ")
    assert path[0] == path[-1] and sorted(path[:-1]) == ["p", "q", "r"]
    assert in_cycles(graph.after) == {"p", "q", "r", "s"}  # s waits for the cycle


def test_a_chain_of_200000_tasks_has_no_recursion_limit() -> None:
    after = {f"t{i}": [f"t{i - 1}"] for i in range(1, 200_000)}
    assert find_cycle(after) is None
    after = dict(reversed(list(after.items())))  # listed backwards: the full peeling
    assert find_cycle(after) is None
    after["t0"] = ["t199999"]
    cycle = find_cycle(after)
    assert cycle is not None and len(cycle) == 200_000
