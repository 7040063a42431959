"""The reference backend: `memory://NAME`, a queue that lives inside one Python process.

It keeps every rule of the contract (leases that expire on a clock, attempts counted exactly,
delayed retries, dead letters with their errors, redrive, exact counts, idempotent and atomic
sends) with nothing to install or start, so the runtime's policy and a user's own worker can
be tested fast and without files or servers, as Dramatiq's StubBroker and Huey's MemoryStorage
serve theirs:

    queue = open_queue("memory://job")
    queue.send(tasks)
    Worker(process_task, argv=["--queue", "memory://job"]).run()

Queues are named stores shared within the process: opening `memory://job` twice gives the
same queue (and its event queue `memory://job-events` works like any other), from any thread.
Another process sees nothing of it. `drop_all_stores()` forgets every store, for tests.

Each store is one lock and a condition to wait on: tasks by id in a dict (state, attempts,
lease token, error), the ids visible now in a deque (released tasks at its head), and two
heaps of due times, one for leases and one for delayed retries. A heap entry carries the
version of its task, which every change bumps, so an entry outdated by a later change is
skipped when it comes up instead of being searched for and removed.

Tasks that wait for others (`Task.after`) are held with a count of the dependencies not done
yet; the ack that completes a dependency counts down each of its dependents under the same lock,
so the one that reaches zero is made visible exactly once. A task done is one `known` no longer
in `entries`, which is how a load that names tasks done before it counts them as done.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from taskfleet.flows.graph import DependencyGraph
from taskfleet.queues.base import (
    DeadLetter,
    Message,
    Queue,
    QueueAddress,
    QueueStats,
    Received,
    SendResult,
    attempts_for_new_queue,
    expired_lease_error,
    queue_not_found,
    tasks_of,
)
from taskfleet.tasks import Task
from taskfleet.tasks.model import as_tasks

if TYPE_CHECKING:
    from taskfleet.tasks.batches import TaskBatch


class _State(Enum):
    WAITING = "waiting"  # visible now, or after a retry delay
    LEASED = "leased"  # held by a consumer until its lease passes
    DEAD = "dead"  # in the dead letters
    HELD = "held"  # waits for dependencies that are not done yet


@dataclass(slots=True)
class _Entry:
    """One task that is not done yet."""

    task: Task
    state: _State = _State.WAITING
    visible_at: float = 0.0  # waiting: when it becomes visible; leased: when the lease ends
    attempts: int = 0
    lease: int = 0  # token of the current lease (never reused within the store)
    version: int = 0  # bumped by every change; outdated heap and deque entries are skipped
    error: str | None = None
    pending: int = 0  # held: dependencies not done yet


@dataclass(slots=True)
class _Counts:
    inserted: int = 0
    duplicates: int = 0
    completed: int = 0


@dataclass
class _Store:
    """The state of one named queue; every access holds `changed`, its lock."""

    max_attempts: int
    changed: threading.Condition = field(default_factory=threading.Condition)
    known: set[str] = field(default_factory=set)  # every id ever inserted (until a purge)
    entries: dict[str, _Entry] = field(default_factory=dict)  # not done, in insertion order
    ready: deque[tuple[str, int]] = field(default_factory=deque)  # (id, version) visible now
    leases: list[tuple[float, str, int]] = field(default_factory=list)  # heap: (until, id, ver)
    delays: list[tuple[float, str, int]] = field(default_factory=list)  # heap: (due, id, ver)
    dead: dict[str, None] = field(default_factory=dict)  # ids in the order they died
    counts: _Counts = field(default_factory=_Counts)
    next_lease: int = 0
    #: dependency id -> the ids of the tasks that wait for it
    waiting_for: dict[str, list[str]] = field(default_factory=dict)
    #: results of completed tasks that others wait for
    results: dict[str, Any] = field(default_factory=dict)
    held: int = 0  # entries in the HELD state
    #: keep the result of every completed task, not only of those others wait for now
    keep_every_result: bool = False


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()
#: names of stores, made or not yet, that keep every result (see `keep_every_result`)
_KEEPING_EVERY_RESULT: set[str] = set()


def drop_all_stores() -> None:
    """Forget every memory queue of this process (for tests: a fresh start each time)."""
    with _STORES_LOCK:
        _STORES.clear()


def drop_store(name: str) -> None:
    """Forget the memory queue `name` (a run that owned it is over: its tasks, results and
    dead letters would otherwise stay in the process for its life)."""
    with _STORES_LOCK:
        _STORES.pop(name, None)
        _KEEPING_EVERY_RESULT.discard(name)


def keep_every_result(name: str) -> None:
    """Let the memory queue `name` (made now or later) keep the result of every task it
    completes. A queue keeps only the results of tasks that others wait for when they
    complete; a run that loads its tasks as it goes (`worker.feed`) may load a task after the
    one it waits for completed, and must still hand it that result. Such a run owns its queue
    and drops it at its end, so the results live no longer than the run's own `results`."""
    with _STORES_LOCK:
        _KEEPING_EVERY_RESULT.add(name)
        store = _STORES.get(name)
        if store is not None:
            store.keep_every_result = True


class MemoryQueue(Queue):
    """A queue in this process's memory; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    example_url: ClassVar[str] = "memory://NAME"
    name_in_query: ClassVar[bool] = False
    exact_counts: ClassVar[bool] = True
    idempotent_send: ClassVar[bool] = True
    atomic_send: ClassVar[bool] = True
    lists_leases: ClassVar[bool] = True
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    shared_between_processes: ClassVar[bool] = False
    tracks_dependencies: ClassVar[bool] = True
    updates_data: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        url: str | None = None,
        create: bool = True,
    ) -> None:
        attempts = attempts_for_new_queue(max_attempts)
        self.name = name
        self.url = url or f"memory://{name}"
        with _STORES_LOCK:
            store = _STORES.get(name)
            if store is None:
                if not create:
                    raise queue_not_found(
                        f"no memory queue {name!r} in this process: a memory:// queue lives "
                        "only in the Python process that opened it",
                        name,
                        _STORES,
                        creates=None,
                    )
                store = _STORES[name] = _Store(attempts)
                store.keep_every_result = name in _KEEPING_EVERY_RESULT
        self._store = store
        self.max_attempts = store.max_attempts

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> MemoryQueue:
        return cls(address.name, max_attempts=max_attempts, url=address.url, create=create)

    # -- inside the lock ------------------------------------------------------------------

    def _change(self, entry: _Entry, state: _State, visible_at: float = 0.0) -> None:
        entry.state = state
        entry.visible_at = visible_at
        entry.version += 1

    def _make_visible(self, task_id: str, entry: _Entry, first: bool = False) -> None:
        self._change(entry, _State.WAITING)
        item = (task_id, entry.version)
        if first:
            self._store.ready.appendleft(item)
        else:
            self._store.ready.append(item)

    def _bury(self, task_id: str, entry: _Entry, error: str | None) -> None:
        self._change(entry, _State.DEAD)
        entry.error = error
        self._store.dead[task_id] = None

    def _lease(self, task_id: str, entry: _Entry, until: float) -> Message:
        store = self._store
        store.next_lease += 1
        entry.lease = store.next_lease
        entry.attempts += 1
        self._change(entry, _State.LEASED, until)
        heapq.heappush(store.leases, (until, task_id, entry.version))
        results = None
        if entry.task.after:
            results = {other: store.results.get(other) for other in entry.task.after}
        return Message(entry.task, f"{entry.lease}:{task_id}", entry.attempts, results)

    def _current(self, task_id: str, version: int) -> _Entry | None:
        entry = self._store.entries.get(task_id)
        return entry if entry is not None and entry.version == version else None

    def _holding(self, message: Message) -> tuple[str, _Entry] | None:
        """The task of a delivery whose lease is still its task's current one."""
        token, _, task_id = message.receipt.partition(":")
        entry = self._store.entries.get(task_id)
        if entry is None or entry.state is not _State.LEASED or str(entry.lease) != token:
            return None
        return task_id, entry

    def _receive_now(self, max_messages: int, lease_seconds: float) -> Received:
        store = self._store
        now = time.monotonic()
        until = now + lease_seconds
        received = Received()
        # 1. Expired leases first (a dead worker's tasks do not wait behind the backlog);
        #    a lease that was the task's last attempt sends it to the dead letters.
        while store.leases and store.leases[0][0] <= now and len(received) < max_messages:
            _, task_id, version = heapq.heappop(store.leases)
            entry = self._current(task_id, version)
            if entry is None:
                continue
            if entry.attempts >= store.max_attempts:
                error = expired_lease_error(entry.attempts, store.max_attempts)
                self._bury(task_id, entry, error)
                received.dead_lettered.append(DeadLetter(entry.task, entry.attempts, error))
            else:
                received.append(self._lease(task_id, entry, until))
        # 2. Delayed retries that are due join the end of the visible tasks.
        while store.delays and store.delays[0][0] <= now:
            _, task_id, version = heapq.heappop(store.delays)
            entry = self._current(task_id, version)
            if entry is not None:
                self._make_visible(task_id, entry)
        # 3. Visible tasks, in order.
        while store.ready and len(received) < max_messages:
            task_id, version = store.ready.popleft()
            entry = self._current(task_id, version)
            if entry is not None:
                received.append(self._lease(task_id, entry, until))
        if received:
            store.changed.notify_all()  # receivers waiting elsewhere must wake when these expire
        return received

    def _next_due(self) -> float | None:
        """When the first lease or delayed retry falls due (outdated entries may be early)."""
        store = self._store
        times = [heap[0][0] for heap in (store.leases, store.delays) if heap]
        return min(times) if times else None

    # -- the protocol ---------------------------------------------------------------------

    def send(self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = 0) -> SendResult:
        """Insert all tasks at once: the iterable is read before the queue changes, so one
        that fails inserts nothing (`atomic_send`)."""
        return self._send(list(as_tasks(tasks)))  # plain dicts too

    def send_batches(self, batches: Iterable[TaskBatch]) -> SendResult:
        """Load validated batches: `send`, with the place in the file of each task that
        waits, for the errors of the dependency check."""
        loaded = list(batches)
        where = {
            batch.ids[index]: batch.place(index)
            for batch in loaded
            for index, body in enumerate(batch.bodies)
            if '"after"' in body
        }
        return self._send(list(tasks_of(loaded)), where)

    def _send(self, batch: list[Task], where: Mapping[str, object] | None = None) -> SendResult:
        result = SendResult(ids_seen=len(batch))
        store = self._store
        with store.changed:
            self._check_dependencies(batch, where or {})
            for task in batch:
                if task.id in store.known:
                    result.already_present += 1
                    continue
                self._insert(task)
                result.inserted += 1
            store.counts.inserted += result.inserted
            store.counts.duplicates += result.already_present
            if result.inserted:
                store.changed.notify_all()
        return result

    def _insert(self, task: Task) -> None:
        """A new task: visible, or held until the tasks it waits for are done (inside the
        lock)."""
        store = self._store
        store.known.add(task.id)
        entry = store.entries[task.id] = _Entry(task)
        if task.after:
            for other in task.after:
                store.waiting_for.setdefault(other, []).append(task.id)
            entry.pending = sum(1 for other in task.after if not self._done(other))
            if entry.pending:
                self._change(entry, _State.HELD)
                store.held += 1
                return
        store.ready.append((task.id, entry.version))

    def _done(self, task_id: str) -> bool:
        """Completed: inserted once, no longer among the tasks not done (inside the lock)."""
        return task_id in self._store.known and task_id not in self._store.entries

    def _check_dependencies(self, batch: Sequence[Task], where: Mapping[str, object]) -> None:
        """Refuse a batch whose dependencies name unknown ids or form a cycle (inside the
        lock, before anything is inserted)."""
        graph = DependencyGraph()
        for task in batch:
            graph.add(task.id, task.after, where.get(task.id))
        if graph.has_dependencies:
            graph.check(known=self._store.known)

    def _complete(self, task_id: str, results: Mapping[str, Any] | None) -> None:
        """The task is done: keep its result if others wait for it, and make visible each
        dependent whose last dependency this was (inside the lock)."""
        store = self._store
        del store.entries[task_id]
        store.counts.completed += 1
        dependents = store.waiting_for.get(task_id)
        if not dependents:
            if store.keep_every_result:
                store.results[task_id] = results.get(task_id) if results else None
            return
        store.results[task_id] = results.get(task_id) if results else None
        for other in dependents:
            entry = store.entries.get(other)
            if entry is None or entry.state is not _State.HELD:
                continue
            entry.pending -= 1
            if entry.pending <= 0:
                store.held -= 1
                self._make_visible(other, entry)
                store.changed.notify_all()

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """`send`, and tasks already present take the batches' data (see the base class).

        A completed task's data is gone (its entry is dropped on ack, as Redis drops its
        body), so completed tasks are counted as `completed_unknown` and left alone, with
        `rerun_completed` or not; a changed dead letter is queued again under it."""
        batch = list(tasks_of(batches))  # read whole first: a bad entry changes nothing
        result = SendResult(ids_seen=len(batch))
        changes = result.changes
        store = self._store
        with store.changed:
            self._check_dependencies(batch, {})
            for task in batch:
                if task.id not in store.known:
                    self._insert(task)
                    result.inserted += 1
                    continue
                result.already_present += 1
                entry = store.entries.get(task.id)
                if entry is None:
                    changes.completed_unknown += 1
                    continue
                if entry.task.data == task.data:
                    continue
                # The data changes, not what the task waits for (its place in the flow was
                # counted when it was loaded); a lease holds its Message: its attempt keeps
                # the old data.
                entry.task = Task(task.id, task.data, entry.task.after)
                if entry.state is not _State.DEAD:
                    changes.updated += 1
                elif rerun_completed:
                    changes.rerun += 1
                    del store.dead[task.id]
                    entry.attempts = 0
                    entry.error = None
                    self._make_visible(task.id, entry)
                else:
                    changes.dead_updated += 1
            store.counts.inserted += result.inserted
            store.counts.duplicates += result.already_present
            if result.inserted or changes.rerun:
                store.changed.notify_all()
        return result

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        if max_messages <= 0:
            return Received()
        store = self._store
        deadline = time.monotonic() + max(0.0, wait_seconds)
        with store.changed:
            while True:
                received = self._receive_now(max_messages, lease_seconds)
                now = time.monotonic()
                if received or received.dead_lettered or now >= deadline:
                    return received
                due = self._next_due()
                wake = deadline if due is None else min(deadline, due)
                store.changed.wait(max(0.0, wake - now))

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        store = self._store
        with store.changed:
            for message in messages:
                entry = store.entries.get(message.task_id)
                if entry is not None and entry.state in (_State.WAITING, _State.LEASED):
                    self._complete(message.task_id, results)

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        store = self._store
        with store.changed:
            held = self._holding(message)
            if held is None:
                return True  # the lease has passed on; the task is someone else's now
            task_id, entry = held
            if entry.attempts >= store.max_attempts:
                self._bury(task_id, entry, error)
                return False
            entry.error = error
            if delay_seconds <= 0:
                self._make_visible(task_id, entry)
            else:
                self._change(entry, _State.WAITING, time.monotonic() + delay_seconds)
                heapq.heappush(store.delays, (entry.visible_at, task_id, entry.version))
            store.changed.notify_all()  # visible now, or waiting receivers learn when
            return True

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        with self._store.changed:
            held = self._holding(message)
            if held is not None:
                self._bury(*held, error)

    def release(self, messages: Sequence[Message]) -> None:
        store = self._store
        with store.changed:
            for message in reversed(messages):  # each to the head: they keep their order
                held = self._holding(message)
                if held is not None:
                    task_id, entry = held
                    entry.attempts = max(0, entry.attempts - 1)
                    self._make_visible(task_id, entry, first=True)
            store.changed.notify_all()

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        store = self._store
        with store.changed:
            until = time.monotonic() + lease_seconds
            for message in messages:
                held = self._holding(message)
                if held is not None:
                    task_id, entry = held
                    self._change(entry, _State.LEASED, until)
                    heapq.heappush(store.leases, (until, task_id, entry.version))

    def stats(self) -> QueueStats:
        store = self._store
        with store.changed:
            now = time.monotonic()
            visible = leased = delayed = 0
            for entry in store.entries.values():
                if entry.state is _State.DEAD or entry.state is _State.HELD:
                    continue
                if entry.visible_at <= now:
                    visible += 1  # waiting and due, or a lease that expired
                elif entry.state is _State.LEASED:
                    leased += 1
                else:
                    delayed += 1
            return QueueStats(
                visible=visible,
                leased=leased,
                delayed=delayed,
                dead=len(store.dead),
                inserted=store.counts.inserted,
                completed=store.counts.completed,
                duplicates_skipped=store.counts.duplicates,
                waiting=store.held,
                blocked=len(self._blocked(store.dead)) if store.held and store.dead else 0,
            )

    def _blocked(self, task_ids: Iterable[str]) -> list[str]:
        """The tasks not done that wait, directly or through others, for `task_ids` (inside
        the lock), in the order they are found."""
        store = self._store
        found: dict[str, None] = {}
        stack = list(task_ids)
        while stack:
            for other in store.waiting_for.get(stack.pop(), ()):
                if other not in found and other in store.entries:
                    found[other] = None
                    stack.append(other)
        return list(found)

    def dependents(self, task_ids: Iterable[str]) -> list[str]:
        with self._store.changed:
            return self._blocked(task_ids)

    def dead_letters(self) -> Iterator[DeadLetter]:
        store = self._store
        with store.changed:
            letters = [
                DeadLetter(store.entries[i].task, store.entries[i].attempts, store.entries[i].error)
                for i in store.dead
            ]
        yield from letters

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        store = self._store
        with store.changed:
            chosen = list(store.dead) if ids is None else [i for i in ids if i in store.dead]
            for task_id in chosen:
                del store.dead[task_id]
                entry = store.entries[task_id]
                entry.attempts = 0
                self._make_visible(task_id, entry)
            if chosen:
                store.changed.notify_all()
            return len(chosen)

    def purge(self) -> None:
        store = self._store
        with store.changed:
            store.known.clear()
            store.entries.clear()
            store.ready.clear()
            store.leases.clear()
            store.delays.clear()
            store.dead.clear()
            store.counts = _Counts()
            store.waiting_for.clear()
            store.results.clear()
            store.held = 0

    def close(self) -> None:
        """Nothing to release: the queue stays in the process until purged or dropped."""

    # -- leases by id (what release-all and the resumable local run use) -------------------

    def leased_ids(self) -> list[str]:
        with self._store.changed:
            return [i for i, e in self._store.entries.items() if e.state is _State.LEASED]

    def ack_ids(self, ids: Iterable[str], results: Mapping[str, Any] | None = None) -> int:
        store = self._store
        done = 0
        with store.changed:
            for task_id in ids:
                entry = store.entries.get(task_id)
                if entry is not None and entry.state in (_State.WAITING, _State.LEASED):
                    self._complete(task_id, results)
                    done += 1
        return done

    def release_all(self) -> int:
        store = self._store
        with store.changed:
            leased = [(i, e) for i, e in store.entries.items() if e.state is _State.LEASED]
            for task_id, entry in reversed(leased):
                entry.attempts = max(0, entry.attempts - 1)
                self._make_visible(task_id, entry, first=True)
            if leased:
                store.changed.notify_all()
        return len(leased)
