"""Random sequences of protocol calls against the SQLite queue and a small in-memory model.

Hypothesis drives send, receive, ack, retry (now or much later), dead_letter, release,
release_all, extend, redrive and purge on a real queue file, applies each call to a plain
Python model of the specification, and checks after every step that the two agree: the counts
of `stats()`, the dead letters with their attempts and last errors, and what each call returned.

Time is kept out of it: leases and long delays last an hour, so nothing expires during a run
(expiry has its own tests), and a retry delay is either 0 (visible at once) or an hour.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from taskfleet.queues.base import Message
from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task

IDS = [f"t{i}" for i in range(12)]
HOUR = 3600.0


@dataclass
class ModelTask:
    """What the specification says about one task."""

    data: dict[str, int]
    state: str = "visible"  # visible, delayed, leased, done or dead
    attempts: int = 0
    receipt: str | None = None  # the receipt of its live delivery, while leased
    error: str | None = None


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="taskfleet-stateful-"))
        self.queue: SQLiteQueue | None = None
        self.max_attempts = 0
        self.model: dict[str, ModelTask] = {}
        self.inserted = 0
        self.duplicates = 0
        self.held: list[Message] = []  # every message received, live or stale

    @initialize(max_attempts=st.integers(min_value=1, max_value=3))
    def open_queue(self, max_attempts: int) -> None:
        self.queue = SQLiteQueue(self.dir / "queue.db", max_attempts=max_attempts)
        self.max_attempts = max_attempts

    def teardown(self) -> None:
        if self.queue is not None:
            self.queue.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def q(self) -> SQLiteQueue:
        assert self.queue is not None
        return self.queue

    def is_live(self, message: Message) -> bool:
        task = self.model.get(message.task_id)
        return task is not None and task.state == "leased" and task.receipt == message.receipt

    def one(self) -> st.SearchStrategy[Message]:
        """A held message, live ones as likely as all the stale ones together."""
        live = [m for m in self.held if self.is_live(m)]
        every = st.sampled_from(self.held)
        return st.sampled_from(live) | every if live else every

    def pick(self, data: st.DataObject, most: int) -> list[Message]:
        return data.draw(st.lists(self.one(), max_size=most))

    # -- rules ------------------------------------------------------------------------------

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=5), version=st.integers(0, 9))
    def send(self, ids: list[str], version: int) -> None:
        result = self.q.send([Task(i, {"v": version}) for i in ids])
        new = 0
        for task_id in ids:
            if task_id not in self.model:
                self.model[task_id] = ModelTask({"v": version})
                new += 1
        assert (result.inserted, result.already_present) == (new, len(ids) - new)
        self.inserted += new
        self.duplicates += len(ids) - new

    @rule(n=st.integers(0, 5))
    def receive(self, n: int) -> None:
        visible = {i for i, t in self.model.items() if t.state == "visible"}
        messages = self.q.receive(n, HOUR)
        got = [m.task_id for m in messages]
        assert len(got) == len(set(got)), got
        assert set(got) <= visible, (got, visible)
        assert len(got) == min(n, len(visible))
        for message in messages:
            task = self.model[message.task_id]
            task.attempts += 1
            assert message.attempt == task.attempts
            assert message.task.data == task.data
            task.state, task.receipt = "leased", message.receipt
        self.held.extend(messages)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        messages = self.pick(data, 3)
        self.q.ack(messages)
        for message in messages:
            # A completion counts even from a stale receipt: the work was done.
            task = self.model[message.task_id]
            if task.state in ("visible", "delayed", "leased"):
                task.state, task.receipt = "done", None

    @precondition(lambda self: self.held)
    @rule(data=st.data(), later=st.booleans(), error=st.sampled_from([None, "boom", "bang"]))
    def retry(self, data: st.DataObject, later: bool, error: str | None) -> None:
        message = data.draw(self.one())
        live = self.is_live(message)
        retried = self.q.retry(message, delay_seconds=HOUR if later else 0, error=error)
        if not live:
            assert retried is True  # not ours any more: nothing happens
            return
        task = self.model[message.task_id]
        task.receipt, task.error = None, error
        if task.attempts >= self.max_attempts:
            assert retried is False
            task.state = "dead"
        else:
            assert retried is True
            task.state = "delayed" if later else "visible"

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        message = data.draw(self.one())
        live = self.is_live(message)
        self.q.dead_letter(message, error="fatal")
        if live:
            task = self.model[message.task_id]
            task.state, task.receipt, task.error = "dead", None, "fatal"

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        messages = self.pick(data, 3)
        self.q.release(messages)
        for message in messages:
            if self.is_live(message):
                task = self.model[message.task_id]
                task.state, task.receipt = "visible", None
                task.attempts = max(0, task.attempts - 1)

    @rule()
    def release_all(self) -> None:
        released = self.q.release_all()
        leased = [t for t in self.model.values() if t.state == "leased"]
        assert released == len(leased)
        for task in leased:
            task.state, task.receipt = "visible", None
            task.attempts = max(0, task.attempts - 1)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        self.q.extend(self.pick(data, 3), HOUR)  # renewing changes no count

    @rule(ids=st.one_of(st.none(), st.lists(st.sampled_from(IDS), max_size=4)))
    def redrive(self, ids: list[str] | None) -> None:
        moved = self.q.redrive(ids)
        chosen = [
            t for i, t in self.model.items() if t.state == "dead" and (ids is None or i in ids)
        ]
        assert moved == len(chosen)
        for task in chosen:
            task.state, task.attempts = "visible", 0

    @precondition(lambda self: len(self.model) >= 10)  # rarely, or little else gets tested
    @rule()
    def purge(self) -> None:
        self.q.purge()
        self.model.clear()
        self.held.clear()  # receipts from before a purge are meaningless
        self.inserted = self.duplicates = 0

    # -- what must always hold --------------------------------------------------------------

    @invariant()
    def stats_agree(self) -> None:
        if self.queue is None:
            return
        counts = {s: 0 for s in ("visible", "delayed", "leased", "done", "dead")}
        for task in self.model.values():
            counts[task.state] += 1
        stats = self.q.stats()
        assert (stats.visible, stats.delayed, stats.leased, stats.completed, stats.dead) == (
            counts["visible"],
            counts["delayed"],
            counts["leased"],
            counts["done"],
            counts["dead"],
        ), (stats, counts)
        assert (stats.inserted, stats.duplicates_skipped) == (self.inserted, self.duplicates)

    @invariant()
    def dead_letters_agree(self) -> None:
        if self.queue is None:
            return
        actual = {(d.task.id, d.attempts, d.error) for d in self.q.dead_letters()}
        expected = {(i, t.attempts, t.error) for i, t in self.model.items() if t.state == "dead"}
        assert actual == expected


QueueMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueAgreesWithModel = QueueMachine.TestCase
