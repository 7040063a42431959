"""The coordinator's state file (`taskfleet.flows.flow_state`), on a real SQLite file: what
each event changes, what it must not change twice, and what a reopened file still knows."""

from __future__ import annotations

from pathlib import Path

from taskfleet.flows.flow_state import FlowState, TaskState
from taskfleet.tasks import Task


def done(task_id: str, total: int = 1, **more: object) -> dict[str, object]:
    return {"event_type": "task_completed", "task_id": task_id, "result": {"t": total}, **more}


def dead(task_id: str) -> dict[str, object]:
    return {"event_type": "task_dead_lettered", "task_id": task_id}


def diamond_state(path: Path) -> FlowState:
    state = FlowState(path)
    state.create(
        [
            Task("a", {}),
            Task("b", {}, ("a",)),
            Task("c", {}, ("a",)),
            Task("d", {}, ("b", "c")),
            Task("e", {}, ("d",)),
        ],
        {"queue": "sqs://q"},
    )
    return state


def states(state: FlowState) -> dict[str, TaskState]:
    rows = state.db.execute("SELECT id, state FROM tasks")
    return {task_id: TaskState(value) for task_id, value in rows}


def test_a_task_is_released_once_by_its_last_dependency_with_their_results(
    tmp_path: Path,
) -> None:
    state = diamond_state(tmp_path / "s.db")
    assert [t.id for t in state.to_send(10)] == ["a"]
    assert state.to_send(10)[0].dependency_results is None
    state.mark_sent(["a"])
    applied = state.apply([done("a", 1)])
    assert applied.released == 2
    assert {t.id: t.dependency_results for t in state.to_send(10)} == {
        "b": {"a": {"t": 1}},
        "c": {"a": {"t": 1}},
    }
    state.mark_sent(["b", "c"])
    assert state.apply([done("b", 11)]).released == 0
    # The same completion again (an event read twice, a task run twice) changes nothing.
    again = state.apply([done("b", 99), done("a", 99)])
    assert (again.repeated, again.released, again.completed) == (2, 0, [])
    assert state.apply([done("c", 101)]).released == 1
    (d,) = state.to_send(10)
    assert d.dependency_results == {"b": {"t": 11}, "c": {"t": 101}}


def test_retried_completions_and_unknown_tasks_change_nothing(tmp_path: Path) -> None:
    state = diamond_state(tmp_path / "s.db")
    state.mark_sent(["a"])
    applied = state.apply([done("a", retry=True), done("zz"), {"event_type": "task_exception"}])
    assert (applied.completed, applied.foreign) == ([], 1)
    assert states(state)["a"] is TaskState.SENT


def test_a_dead_letter_blocks_what_waits_for_it_until_it_completes_after_redrive(
    tmp_path: Path,
) -> None:
    state = diamond_state(tmp_path / "s.db")
    state.mark_sent(["a"])
    state.apply([done("a")])
    state.mark_sent(["b", "c"])
    state.apply([dead("b"), done("c")])
    counts = state.counts()
    assert (counts.dead, counts.blocked, counts.waiting, counts.completed) == (1, 2, 2, 2)
    assert counts.finished
    assert state.blocked_by(["b"]) == [("d", "b"), ("e", "b")]

    # Redriven: no longer among the queue's dead letters, so it is followed again.
    assert state.reconcile(set()) == (["b"], [])
    assert not state.counts().finished
    assert state.apply([done("b")]).released == 1
    assert [t.id for t in state.to_send(10)] == ["d"]


def test_reconcile_marks_dead_a_sent_task_found_among_the_dead_letters(tmp_path: Path) -> None:
    state = diamond_state(tmp_path / "s.db")
    state.mark_sent(["a"])
    assert state.reconcile({"a", "not-ours"}) == ([], ["a"])
    assert states(state)["a"] is TaskState.DEAD
    assert state.counts().blocked == 4


def test_a_reopened_state_knows_everything_committed(tmp_path: Path) -> None:
    state = diamond_state(tmp_path / "s.db")
    state.mark_sent(["a"])
    state.apply([done("a", 7)])
    state.close()
    reopened = FlowState(tmp_path / "s.db")
    assert reopened.created and reopened.meta("queue") == "sqs://q"
    assert {t.id: t.dependency_results for t in reopened.to_send(10)} == {
        "b": {"a": {"t": 7}},
        "c": {"a": {"t": 7}},
    }
    assert reopened.counts().completed == 1


def test_the_results_travel_in_the_message_body_and_a_flat_task_is_unchanged() -> None:
    sent = Task("d", {"n": 1}, (), {"b": {"t": 11}, "c": None})
    assert Task.from_json(sent.to_json()) == sent
    assert Task("x", {"n": 1}).to_json() == b'{"id":"x","data":{"n":1}}'
    assert Task.from_json(b'{"id":"x","data":{}}').dependency_results is None
