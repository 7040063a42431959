"""The dependency contract: what a queue that keeps the state of a flow (`tracks_dependencies`)
promises, run against each such backend.

Each test is one clause. The backends are the rows of DEPENDENCY_BACKENDS, which take the
`backend` fixture of conftest.py indirectly: a backend that gains `tracks_dependencies` (Redis)
adds its name there and nothing else.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from taskfleet.errors import TaskFileError
from taskfleet.queues import Message, Queue, open_queue
from taskfleet.tasks import Task
from taskfleet.tasks.batches import TaskBatch
from taskfleet.tasks.loading import load_tasks_into

if TYPE_CHECKING:
    from conftest import Backend

DEPENDENCY_BACKENDS = ["memory", "sqlite", "redis"]

pytestmark = pytest.mark.parametrize("backend", DEPENDENCY_BACKENDS, indirect=True)

LEASE = 30.0


def task(task_id: str, *after: str) -> Task:
    return Task(task_id, {"n": task_id}, tuple(after))


def take(queue: Queue, n: int = 100) -> dict[str, Message]:
    """Lease every visible task (up to n), by id."""
    return {m.task_id: m for m in queue.receive(n, LEASE)}


def diamond() -> list[Task]:
    return [task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c")]


def test_declares_tracks_dependencies(make_queue: Callable[..., Queue]) -> None:
    assert make_queue().tracks_dependencies


def test_diamond_releases_each_task_when_its_last_dependency_is_acked(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    assert queue.send(diamond()).inserted == 4
    first = take(queue)
    assert list(first) == ["a"]
    assert first["a"].dependency_results is None  # it waited for nothing
    queue.ack([first["a"]], {"a": {"rows": 3}})
    second = take(queue)
    assert sorted(second) == ["b", "c"]
    assert second["b"].dependency_results == {"a": {"rows": 3}}
    queue.ack([second["b"]], {"b": 10})
    assert take(queue) == {}, "d waits for c too"
    queue.ack([second["c"]], {"c": [1, "x"]})
    third = take(queue)
    assert list(third) == ["d"]
    assert third["d"].dependency_results == {"b": 10, "c": [1, "x"]}
    queue.ack([third["d"]], {"d": None})
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (4, 0, 0)


def test_fan_out_fan_in_and_the_counts_of_waiting_tasks(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    parts = [f"part-{i}" for i in range(20)]
    queue.send([task("prep"), *(task(p, "prep") for p in parts), task("agg", *parts)])
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.blocked, stats.remaining) == (1, 21, 0, 22)
    queue.ack(list(take(queue).values()), {"prep": "ready"})
    leased = take(queue)
    assert sorted(leased) == sorted(parts)
    stats = queue.stats()
    assert (stats.visible, stats.leased, stats.waiting) == (0, 20, 1)
    for i, part in enumerate(parts):
        assert take(queue) == {}
        queue.ack([leased[part]], {part: i})
    final = take(queue)
    assert list(final) == ["agg"]
    assert final["agg"].dependency_results == {p: i for i, p in enumerate(parts)}


def test_ack_of_a_task_already_done_releases_nothing_twice(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    queue.send(diamond())
    a = take(queue)["a"]
    queue.ack([a])
    mid = take(queue)
    queue.ack([mid["b"]])
    queue.ack([mid["b"]])  # a second consumer's ack of the same task
    queue.ack([a])
    assert take(queue) == {}, "d must wait for c however often b is acked"
    queue.ack([mid["c"]])
    assert list(take(queue)) == ["d"]


def test_release_happens_exactly_once_with_two_racing_consumers(
    make_queue: Callable[..., Queue], backend: Backend
) -> None:
    """Two consumers (two connections for a file) lease and ack a wide fan-in concurrently;
    every task is delivered once, and each aggregate only after all its parts were acked."""
    name = "race"
    queue = make_queue(name=name)
    groups, width = 4, 40
    tasks: list[Task] = []
    for g in range(groups):
        parts = [f"g{g}-p{i}" for i in range(width)]
        tasks += [task(p) for p in parts] + [task(f"g{g}-agg", *parts)]
    queue.send(tasks)
    delivered: Counter[str] = Counter()
    acked: set[str] = set()
    early: list[str] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def consume() -> None:
        own = open_queue(backend.url_for(name))
        try:
            idle = 0
            while idle < 20:
                messages = own.receive(3, LEASE, wait_seconds=0.05)
                if not messages:
                    idle += 1
                    continue
                idle = 0
                with lock:
                    for m in messages:
                        delivered[m.task_id] += 1
                        if m.task.after and not set(m.task.after) <= acked:
                            early.append(m.task_id)
                with lock:  # marked before the ack that may release their dependents
                    acked.update(m.task_id for m in messages)
                # both consumers ack every batch twice: the second ack must change nothing
                own.ack(messages, {m.task_id: m.task_id.upper() for m in messages})
                own.ack(messages, {m.task_id: "again" for m in messages})
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert early == []
    assert set(delivered) == {t.id for t in tasks}
    assert max(delivered.values()) == 1, [k for k, v in delivered.items() if v > 1]
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (len(tasks), 0, 0)


def test_a_dead_letter_blocks_its_dependents_until_redriven(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    queue.send([task("a"), task("b", "a"), task("c", "b"), task("x"), task("y", "x")])
    first = take(queue)
    queue.dead_letter(first["a"], "broke")
    queue.ack([first["x"]], {"x": 1})
    assert list(take(queue)) == ["y"]
    stats = queue.stats()
    assert (stats.dead, stats.waiting, stats.blocked, stats.remaining) == (1, 2, 2, 1)
    assert queue.dependents(["a"]) == ["b", "c"]
    assert queue.dependents(["x"]) == ["y"]  # not done yet: leased
    assert queue.dependents(["c"]) == []
    assert queue.redrive(["a"]) == 1
    stats = queue.stats()
    assert (stats.blocked, stats.waiting, stats.remaining) == (0, 2, 4)
    again = take(queue)
    assert list(again) == ["a"]
    queue.ack([again["a"]], {"a": "fixed"})
    b = take(queue)["b"]
    assert b.dependency_results == {"a": "fixed"}


def test_an_attempt_dead_lettered_by_retry_blocks_as_well(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue(max_attempts=1)
    queue.send([task("a"), task("b", "a")])
    assert queue.retry(take(queue)["a"], 0, "failed") is False
    assert queue.stats().blocked == 1
    assert [d.task.id for d in queue.dead_letters()] == ["a"]


def test_a_task_that_waits_for_one_done_before_the_load_runs_at_once(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    queue.send([task("a")])
    queue.ack(list(take(queue).values()), {"a": 1})
    queue.send([task("b", "a"), task("c", "a", "b")])
    leased = take(queue)
    assert list(leased) == ["b"]
    assert queue.stats().waiting == 1
    queue.ack([leased["b"]])
    assert list(take(queue)) == ["c"]


def test_loading_the_flow_again_changes_no_count(
    make_queue: Callable[..., Queue], tmp_path: Path
) -> None:
    """A resumed run loads its task file again: the tasks already held must keep waiting for
    exactly the dependencies not done yet."""
    path = tmp_path / "flow.json"
    path.write_bytes(
        orjson.dumps([{"id": t.id, "data": t.data, "after": t.after} for t in diamond()])
    )
    queue = make_queue()
    load_tasks_into(queue, str(path))
    queue.ack(list(take(queue).values()))
    b = take(queue)["b"]
    queue.ack([b])
    assert load_tasks_into(queue, str(path)).already_present == 4
    queue.send(diamond())
    assert take(queue) == {}, "d waits for c, leased and not done"
    assert queue.stats().waiting == 1


def test_purge_forgets_the_dependency_state(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.send(diamond())
    queue.dead_letter(take(queue)["a"], "x")
    queue.purge()
    stats = queue.stats()
    assert (stats.waiting, stats.blocked, stats.dead, stats.inserted) == (0, 0, 0, 0)
    assert queue.dependents(["a"]) == []
    queue.send([task("b", "a"), task("a")])
    a = take(queue)["a"]
    queue.ack([a], {"a": 2})
    assert take(queue)["b"].dependency_results == {"a": 2}


def test_ack_ids_releases_dependents(make_queue: Callable[..., Queue]) -> None:
    """The resumable local run settles by id the tasks whose outcome it recorded."""
    queue = make_queue()
    if not queue.lists_leases:
        pytest.skip("this backend settles no task by id (Queue.lists_leases)")
    queue.send([task("a"), task("b", "a")])
    take(queue)
    assert queue.ack_ids(["a"]) == 1
    assert list(take(queue)) == ["b"]


@pytest.mark.parametrize(
    ("tasks", "words"),
    [
        ([task("a", "c"), task("b", "a"), task("c", "b")], "a -> "),
        ([task("a"), task("b", "nope", "a")], "'nope', which no task of the load has"),
        ([task("a", "a")], "waits for itself"),
    ],
    ids=["cycle", "unknown", "self"],
)
def test_a_bad_graph_is_refused_and_nothing_is_inserted(
    make_queue: Callable[..., Queue], tasks: list[Task], words: str
) -> None:
    queue = make_queue()
    with pytest.raises(TaskFileError, match="Nothing was loaded") as caught:
        queue.send(tasks)
    assert words in str(caught.value)
    stats = queue.stats()
    assert (stats.inserted, stats.visible, stats.waiting) == (0, 0, 0)


def test_a_cycle_in_a_task_file_names_its_line_and_the_cycle(
    make_queue: Callable[..., Queue], tmp_path: Path
) -> None:
    path = tmp_path / "flow.jsonl"
    rows = [
        {"id": "prep", "data": {}},
        {"id": "x", "data": {}, "after": ["z"]},
        {"id": "y", "data": {}, "after": ["x"]},
        {"id": "z", "data": {}, "after": ["y", "prep"]},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
    queue = make_queue()
    with pytest.raises(TaskFileError) as caught:
        load_tasks_into(queue, str(path))
    message = str(caught.value)
    assert "flow.jsonl: line" in message
    cycle = message.split("run: ")[1].split(" (")[0]
    nodes = cycle.split(" -> ")
    assert nodes[0] == nodes[-1] and sorted(nodes[:-1]) == ["x", "y", "z"]
    assert queue.stats().inserted == 0


def test_a_flow_task_file_loads_and_runs_in_order(
    make_queue: Callable[..., Queue], tmp_path: Path
) -> None:
    path = tmp_path / "flow.json"
    rows = [
        {"id": "agg", "data": {}, "after": ["p1", "p2"]},  # names tasks later in the file
        {"id": "prep", "data": {}},
        {"id": "p1", "data": {}, "after": ["prep"]},
        {"id": "p2", "data": {}, "after": "prep"},
    ]
    path.write_bytes(orjson.dumps(rows))
    queue = make_queue()
    assert load_tasks_into(queue, str(path)).inserted == 4
    order = []
    while order != ["prep", "p1", "p2", "agg"] and len(order) < 4:
        leased = take(queue)
        assert leased, order
        order += sorted(leased)
        queue.ack(list(leased.values()))
    assert order == ["prep", "p1", "p2", "agg"]


def test_an_update_load_holds_its_new_waiting_tasks_and_changes_only_data(
    make_queue: Callable[..., Queue],
) -> None:
    """`load-queue --update` of a flow whose file gained tasks and changed data: the new tasks
    wait like any loaded flow's, and a waiting task takes its new data but keeps waiting."""
    queue = make_queue()
    queue.send([task("a"), task("b", "a")])
    fixed = [
        task("a"),
        Task("b", {"n": "b, fixed"}, ("a",)),
        task("c", "b"),
        task("d"),
    ]
    bodies = [t.to_json().decode() for t in fixed]
    batch = TaskBatch("flow.json", "task", range(1, 5), [t.id for t in fixed], bodies, True)
    result = queue.send_updates([batch])
    assert (result.inserted, result.already_present) == (2, 2)
    assert result.changes.updated == 1
    first = take(queue)
    assert sorted(first) == ["a", "d"], "c waits for b, which waits for a"
    assert queue.stats().waiting == 2
    queue.ack(list(first.values()), {"a": 1, "d": 2})
    second = take(queue)
    assert list(second) == ["b"]
    assert second["b"].task.data == {"n": "b, fixed"}
    queue.ack([second["b"]], {"b": 3})
    third = take(queue)
    assert list(third) == ["c"]
    assert third["c"].dependency_results == {"b": 3}
