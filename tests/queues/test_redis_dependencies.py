"""The Redis queue keeps the dependency state (`Task.after`) on the server, in Lua: these tests
drive it on a real redis-server, with real processes where consumers race."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections.abc import Iterator

import pytest

from taskfleet.errors import TaskFileError
from taskfleet.queues import open_queue
from taskfleet.queues.base import Message, SendInterrupted
from taskfleet.queues.redis import RedisQueue
from taskfleet.tasks import Task

LEASE = 30.0


@pytest.fixture
def queue(redis_url: str) -> Iterator[RedisQueue]:
    q = open_queue(f"{redis_url}/0?name=dep{uuid.uuid4().hex[:10]}")
    assert isinstance(q, RedisQueue)
    yield q
    q.purge()
    q.close()


def _drain(queue: RedisQueue, results: dict[str, object] | None = None) -> list[list[Message]]:
    """Receive and ack until nothing is visible; the batches, in order. Each task returns
    `results[id]` (default: its id in capitals)."""
    batches = []
    while True:
        messages = queue.receive(1000, LEASE)
        if not messages:
            return batches
        batches.append(list(messages))
        given = {m.task_id: (results or {}).get(m.task_id, m.task_id.upper()) for m in messages}
        queue.ack(messages, given)


def _ids(batches: list[list[Message]]) -> list[list[str]]:
    return [sorted(m.task_id for m in batch) for batch in batches]


def _queue_keys(queue: RedisQueue) -> set[str]:
    keys = queue._redis.keys(f"taskfleet:{{{queue.name}}}:*")
    return {k.decode().rsplit(":", 1)[1] for k in keys}


def test_diamond_runs_in_order_with_results(queue: RedisQueue) -> None:
    queue.send(
        [
            Task("d", {}, ("b", "c")),  # before its dependencies in the load: it still waits
            Task("a", {}),
            Task("b", {}, ("a",)),
            Task("c", {}, ("a",)),
        ]
    )
    assert queue.stats().waiting == 3
    batches = _drain(queue)
    assert _ids(batches) == [["a"], ["b", "c"], ["d"]]
    assert batches[0][0].dependency_results is None  # waited for nothing
    assert {m.task_id: m.dependency_results for m in batches[1]} == {
        "b": {"a": "A"},
        "c": {"a": "A"},
    }
    assert batches[2][0].dependency_results == {"b": "B", "c": "C"}
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (4, 0, 0)
    # Every result was read by all that waited for it: nothing is left but the queue itself.
    assert _queue_keys(queue) == {"meta", "known"}


def test_fan_out_fan_in_across_many_send_calls(queue: RedisQueue) -> None:
    parts = [Task(f"part-{i:03d}", {"i": i}, ("prepare",)) for i in range(250)]
    tasks = [Task("prepare", {}), *parts, Task("aggregate", {}, tuple(t.id for t in parts))]
    queue.send(tasks, batch_size=7)  # edges and their tasks land in different script calls
    results: dict[str, object] = {"prepare": {"chunks": 250}}
    results.update({t.id: t.data["i"] ** 2 for t in parts})
    batches = _drain(queue, results)
    assert _ids(batches) == [["prepare"], sorted(t.id for t in parts), ["aggregate"]]
    assert all(m.dependency_results == {"prepare": {"chunks": 250}} for m in batches[1])
    aggregate = batches[2][0].dependency_results
    assert aggregate is not None
    assert sum(aggregate.values()) == sum(i * i for i in range(250))
    assert queue.stats().completed == 252


def test_loading_again_adds_no_edges(queue: RedisQueue) -> None:
    tasks = [Task("a", {}), Task("b", {}, ("a",))]
    queue.send(tasks)
    assert queue.send(tasks).already_present == 2
    assert _ids(_drain(queue)) == [["a"], ["b"]]
    assert queue.stats().completed == 2


def test_a_task_loaded_after_its_dependency_completed_runs_at_once(queue: RedisQueue) -> None:
    queue.send([Task("a", {})])
    _drain(queue)
    queue.send([Task("b", {}, ("a",))])
    stats = queue.stats()
    assert (stats.visible, stats.waiting) == (1, 0)
    assert _ids(_drain(queue)) == [["b"]]


def _waiters(queue: RedisQueue, task_id: str) -> list[str]:
    """The waiter list the queue keeps for `task_id` (its `next` field), in order."""
    value = queue._redis.hget(queue._keys[11], task_id)
    return value.decode().split("\n") if value else []


def test_a_load_mixing_present_and_new_waiters_adds_edges_for_the_new_ones_only(
    queue: RedisQueue,
) -> None:
    # SEND_FLOW takes a call's edges grouped by the client: the waiters of "a" come as one
    # list, of which "b" is already in the queue (its edge was written by the first load).
    queue.send([Task("a", {}), Task("b", {}, ("a",))])
    result = queue.send([Task("b", {}, ("a",)), Task("c", {}, ("a",)), Task("d", {}, ("c",))])
    assert (result.inserted, result.already_present) == (2, 1)
    assert _waiters(queue, "a") == ["b", "c"]
    assert _waiters(queue, "c") == ["d"]
    assert _ids(_drain(queue)) == [["a"], ["b", "c"], ["d"]]
    assert _queue_keys(queue) == {"meta", "known"}


def test_an_id_repeated_in_one_load_waits_once(queue: RedisQueue) -> None:
    result = queue.send([Task("a", {}), Task("b", {}, ("a",)), Task("b", {"again": 1}, ("a",))])
    assert (result.inserted, result.already_present) == (2, 1)
    assert _waiters(queue, "a") == ["b"]
    batches = _drain(queue)
    assert _ids(batches) == [["a"], ["b"]]
    assert batches[1][0].task.data == {}  # the first entry is the one inserted
    assert _queue_keys(queue) == {"meta", "known"}


def test_dependencies_done_before_the_load_count_for_every_waiter(queue: RedisQueue) -> None:
    # "a" is done, "x" is not: the waiters of both (one group for the script) wait for "x"
    # only, those of "a" alone run at once, and "a" gets no waiter list.
    queue.send([Task("a", {}), Task("x", {})])
    first = queue.receive(1, LEASE)
    assert [m.task_id for m in first] == ["a"]
    queue.ack(first, {"a": "A"})
    queue.send([Task(f"w{i}", {}, ("a", "x")) for i in range(3)] + [Task("v", {}, ("a",))])
    stats = queue.stats()
    assert (stats.visible, stats.waiting) == (2, 3)  # x and v
    assert _waiters(queue, "a") == []
    assert _waiters(queue, "x") == ["w0", "w1", "w2"]
    assert _ids(_drain(queue)) == [["v", "x"], ["w0", "w1", "w2"]]


def _race(url: str, start: mp.Event, out: mp.Queue) -> None:
    """A consumer: lease one task at a time and ack it with its id as result, until the
    queue has nothing left; report every id it ran."""
    queue = open_queue(url)
    start.wait()
    ran = []
    while True:
        messages = queue.receive(1, LEASE)
        if not messages:
            if queue.stats().remaining == 0:
                break
            continue
        ran.extend(m.task_id for m in messages)
        queue.ack(messages, {m.task_id: m.task_id for m in messages})
    out.put(ran)


def test_two_racing_consumers_release_each_task_exactly_once(queue: RedisQueue) -> None:
    # 20 groups of 1 -> 30 -> 1, the 30 of each group acked one by one by two processes at
    # once: each aggregate must become visible once, however the last acks interleave.
    tasks = []
    for g in range(20):
        parts = [f"g{g}-p{i}" for i in range(30)]
        tasks.append(Task(f"g{g}-prep", {}))
        tasks += [Task(p, {}, (f"g{g}-prep",)) for p in parts]
        tasks.append(Task(f"g{g}-agg", {}, tuple(parts)))
    queue.send(tasks)
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    consumers = [ctx.Process(target=_race, args=(queue.url, start, out)) for _ in range(2)]
    for process in consumers:
        process.start()
    start.set()
    ran = [task_id for _ in consumers for task_id in out.get(timeout=120)]
    for process in consumers:
        process.join(30)
    assert sorted(ran) == sorted(t.id for t in tasks)  # each exactly once
    stats = queue.stats()
    assert (stats.completed, stats.visible, stats.waiting) == (len(tasks), 0, 0)
    assert queue._redis.llen(queue._keys[5]) == 0  # no id queued twice, even a stale one


def test_an_ack_after_the_lease_passed_on_releases_nothing_twice(redis_url: str) -> None:
    queue = open_queue(f"{redis_url}/0?name=dep{uuid.uuid4().hex[:10]}")
    try:
        queue.send([Task("a", {}), Task("b", {}, ("a",))])
        first = queue.receive(1, 0.2)
        time.sleep(0.35)  # the first consumer's lease expires: a second one gets the task
        second = queue.receive(1, LEASE)
        assert [m.task_id for m in second] == ["a"]
        queue.ack(first, {"a": "first"})
        queue.ack(second, {"a": "second"})
        released = queue.receive(10, LEASE)
        assert [(m.task_id, m.dependency_results) for m in released] == [("b", {"a": "first"})]
        assert queue.receive(10, LEASE) == []
    finally:
        queue.purge()
        queue.close()


def test_a_dead_letter_blocks_its_dependents_until_redriven(queue: RedisQueue) -> None:
    queue.send(
        [
            Task("a", {}),
            Task("ok", {}),
            Task("b", {}, ("a",)),
            Task("c", {}, ("b", "ok")),
            Task("free", {}, ("ok",)),
        ]
    )
    messages = {m.task_id: m for m in queue.receive(10, LEASE)}
    queue.dead_letter(messages["a"], "boom")
    queue.ack([messages["ok"]], {"ok": 1})
    assert queue.dependents(["a"]) == ["b", "c"]
    assert queue.dependents(["ok"]) == ["c", "free"]  # done, but they are not (yet)
    stats = queue.stats()
    assert (stats.dead, stats.waiting, stats.blocked, stats.visible) == (1, 2, 2, 1)
    assert stats.remaining == 1  # only `free` will run without help
    assert _ids(_drain(queue)) == [["free"]]
    assert queue.stats().blocked == 2

    assert queue.redrive(["a"]) == 1
    assert queue.stats().blocked == 0
    batches = _drain(queue)
    assert _ids(batches) == [["a"], ["b"], ["c"]]
    assert batches[2][0].dependency_results == {"b": "B", "ok": 1}
    assert queue.dependents(["a"]) == []


def test_stats_count_waiting_tasks_in_remaining(queue: RedisQueue) -> None:
    queue.send([Task("a", {}), Task("b", {}, ("a",)), Task("c", {}, ("b",))])
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.blocked, stats.remaining) == (1, 2, 0, 3)
    leased = queue.receive(1, LEASE)
    stats = queue.stats()
    assert (stats.visible, stats.leased, stats.waiting, stats.remaining) == (0, 1, 2, 3)
    queue.ack(leased, {"a": None})
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.completed, stats.remaining) == (1, 1, 1, 2)


def test_purge_clears_every_dependency_key(queue: RedisQueue) -> None:
    queue.send([Task("a", {}), Task("b", {}, ("a",)), Task("c", {}, ("a", "b"))])
    queue.ack(queue.receive(1, LEASE), {"a": 1})  # a result kept, a task still waiting
    assert {"wait", "next", "res", "readers"} <= _queue_keys(queue)
    queue.purge()
    assert _queue_keys(queue) == {"meta"}
    assert queue._redis.hget(queue._keys[0], "flows") is None
    queue.send([Task("a", {})])  # the purged queue is flat again, and works
    assert _ids(_drain(queue)) == [["a"]]


def test_flat_tasks_write_no_dependency_state_and_send_no_results(queue: RedisQueue) -> None:
    queue.send([Task(f"t{i}", {"i": i}) for i in range(50)])
    sent: list[tuple[object, ...]] = []
    original = queue._run_many

    def recording(script: str, arg_lists: list[list[object]]) -> list[object]:
        sent.extend(tuple(args) for args in arg_lists if script == "ACK")
        return original(script, arg_lists)

    queue._run_many = recording  # type: ignore[method-assign]
    batches = _drain(queue, {f"t{i}": {"big": "x" * 100} for i in range(50)})
    assert sum(map(len, batches)) == 50
    # The acks carried the count and the ids only: the results stayed on the worker.
    assert [len(args) for args in sent] == [1 + len(batch) for batch in batches]
    assert _queue_keys(queue) == {"meta", "known"}
    assert all(m.dependency_results is None for batch in batches for m in batch)


@pytest.mark.parametrize("same_call", [False, True])
def test_a_waiting_task_acked_by_hand_leaves_the_others_their_results(
    queue: RedisQueue, same_call: bool
) -> None:
    # A waiting task is in no list: an ack naming it (a message made up, as a tool that marks
    # tasks done by id would) completes it, and must not take the result the others need.
    queue.send([Task("a", {}), Task("w", {}, ("a",)), Task("b", {}, ("a",))])
    by_hand = Message(Task("w", {}, ("a",)), "0:w", 1)
    if same_call:
        queue.ack([*queue.receive(1, LEASE), by_hand], {"a": "A", "w": "W"})
    else:
        queue.ack([by_hand], {"w": "W"})
        assert (queue.stats().completed, queue.stats().waiting) == (1, 1)
        queue.ack(queue.receive(1, LEASE), {"a": "A"})
    released = queue.receive(10, LEASE)
    assert [(m.task_id, m.dependency_results) for m in released] == [("b", {"a": "A"})]
    queue.ack(released, {"b": "B"})
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (3, 0, 0)
    assert _queue_keys(queue) == {"meta", "known"}


def test_a_bad_graph_after_the_first_waiting_task_inserts_nothing(queue: RedisQueue) -> None:
    # From its first waiting task on a load holds its tasks (up to HOLD_FLAT), so a cycle
    # found at the end leaves the queue as it was, however many round trips the load spans.
    tasks = [Task("x", {}, ("y",)), *(Task(f"t{i}", {}) for i in range(12_000))]
    tasks.append(Task("y", {}, ("x",)))
    with pytest.raises(TaskFileError, match=r"x -> y -> x|y -> x -> y"):
        queue.send(tasks)
    assert queue.stats().inserted == 0


def test_a_bad_graph_after_a_streamed_flat_part_says_what_went_in(queue: RedisQueue) -> None:
    # A flat load streams (it costs nothing extra); a waiting task at the end of a big one
    # finds its round trips in already: the error says so and counts them, and none of the
    # waiting tasks went in.
    tasks = [*(Task(f"t{i}", {}) for i in range(6_000)), Task("w", {}, ("nope",))]
    with pytest.raises(SendInterrupted) as caught:
        queue.send(tasks)
    assert caught.value.inserted == 5_000  # one round trip of 10 x 500
    assert "'nope'" in str(caught.value) and "None of the tasks that wait" in str(caught.value)
    assert isinstance(caught.value.cause, TaskFileError)
    assert (queue.stats().inserted, queue.stats().waiting) == (5_000, 0)


def _counts(queue: RedisQueue) -> dict[str, int]:
    """The `wait` hash: the tasks that keep a count of the dependencies not done yet."""
    raw = queue._redis.hgetall(queue._keys[10])
    return {k.decode(): int(v) for k, v in raw.items()}


def test_a_task_that_waits_for_one_id_keeps_no_count(queue: RedisQueue) -> None:
    # The parts of a fan-out wait for one id each: they are held by their place in its
    # waiter list alone (and counted in meta.held), only the fan-in keeps a count.
    parts = [Task(f"p{i}", {}, ("a",)) for i in range(3)]
    queue.send([Task("a", {}), *parts, Task("g", {}, tuple(t.id for t in parts))])
    assert _counts(queue) == {"g": 3}
    assert queue._redis.hget(queue._keys[0], "held") == b"3"
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.remaining) == (1, 4, 5)
    batches = _drain(queue)
    assert _ids(batches) == [["a"], ["p0", "p1", "p2"], ["g"]]
    assert batches[2][0].dependency_results == {"p0": "P0", "p1": "P1", "p2": "P2"}
    assert queue._redis.hget(queue._keys[0], "held") == b"0"
    assert (queue.stats().waiting, queue.stats().completed) == (0, 5)
    assert _queue_keys(queue) == {"meta", "known"}


def test_a_task_without_a_count_released_by_hand_is_not_blocked(queue: RedisQueue) -> None:
    # d is dead; x and z wait for d alone, y for x alone. x acked by hand is done, which
    # releases y: the walk from the dead letter passes x and y, and neither waits any more.
    queue.send([Task("d", {}), Task("x", {}, ("d",)), Task("y", {}, ("x",)), Task("z", {}, ("d",))])
    queue.dead_letter(queue.receive(1, LEASE)[0], "boom")
    stats = queue.stats()
    assert (stats.dead, stats.waiting, stats.blocked) == (1, 3, 3)
    queue.ack([Message(Task("x", {}, ("d",)), "0:x", 1)], {"x": "X"})
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.blocked, stats.completed) == (1, 1, 1, 1)
    released = queue.receive(10, LEASE)
    assert [(m.task_id, m.dependency_results) for m in released] == [("y", {"x": "X"})]


def test_an_ack_of_a_task_given_back_to_the_ready_list_is_counted_stale(
    queue: RedisQueue,
) -> None:
    # With tasks held without a count in the queue, an ack of a task that is neither leased
    # nor counted must tell one waiting in the ready list (stale there) from one held.
    queue.send([Task("a", {}), Task("b", {}), Task("w", {}, ("a",))])
    messages = queue.receive(2, LEASE)
    queue.release(messages)  # both back at the head of the ready list
    queue.ack([m for m in messages if m.task_id == "b"], {"b": None})
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.completed) == (1, 1, 1)
    assert _ids(_drain(queue)) == [["a"], ["w"]]
    assert (queue.stats().waiting, queue.stats().remaining) == (0, 0)


def test_a_flow_half_done_in_the_shape_of_before_runs_to_its_end(queue: RedisQueue) -> None:
    # Before, every waiting task kept a count in `wait`, those waiting for one id too, and
    # meta.held did not exist. A queue loaded that way with a flow half done (here written
    # in that shape: the new load's state plus the counts of 1, without meta.held) must run
    # to its end with the new scripts, and a hand ack of such a task must still work.
    parts = [Task(f"p{i}", {}, ("a",)) for i in range(3)]
    others = [Task(f"q{i}", {}, ("b",)) for i in range(3)]
    queue.send(
        [
            Task("a", {}),
            Task("b", {}),
            *parts,
            Task("g", {}, tuple(t.id for t in parts)),
            *others,
            Task("h", {}, (*(t.id for t in others), "g")),
        ]
    )
    first = {m.task_id: m for m in queue.receive(1, LEASE)}
    queue.ack(list(first.values()), {"a": "A"})  # the parts of a are released
    assert sorted(_counts(queue)) == ["g", "h"]
    queue._redis.hset(queue._keys[10], mapping={t.id: 1 for t in others})
    queue._redis.hdel(queue._keys[0], "held")
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.remaining) == (4, 5, 9)
    queue.ack([Message(others[0], "0:q0", 1)], {"q0": "Q0"})  # by hand, while it waits
    stats = queue.stats()
    assert (stats.visible, stats.waiting, stats.completed) == (4, 4, 2)
    batches = _drain(queue)
    assert _ids(batches) == [["b", "p0", "p1", "p2"], ["g", "q1", "q2"], ["h"]]
    given = {m.task_id: m.dependency_results for batch in batches for m in batch}
    assert given["g"] == {"p0": "P0", "p1": "P1", "p2": "P2"}
    assert given["q1"] == given["q2"] == {"b": "B"}
    assert given["h"] == {"q0": "Q0", "q1": "Q1", "q2": "Q2", "g": "G"}
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (10, 0, 0)
    assert queue._redis.hget(queue._keys[0], "held") in (None, b"0")
    assert _queue_keys(queue) == {"meta", "known"}
