"""The flow coordinator for queues that keep no dependency state (SQS, Pub/Sub).

`taskfleet flow run` records the flow in its state file (`flow_state`), sends the tasks that
wait for nothing, then follows the event queue that the workers write to: each
`task_completed` is committed to the state (with its result, when others wait for it) and
only then acked, and each task whose last dependency it was is sent with its dependencies'
results inside its message (`Task.dependency_results`, handed to the task as
`worker_data.dependency_results`). A `task_dead_lettered` marks its task dead: the tasks that
wait for it are held and reported as blocked, until `taskfleet redrive` puts it back and it
completes.

The dead letters are also read from the queue itself when the flow is otherwise idle
(`reconcile`): a dead task no longer in the dead letters was redriven, and a sent task found
there was dead-lettered without its event reaching us (SQS's own redrive policy writes no
event). So a rerun after `redrive` goes on where the flow stopped.

The coordinator runs until every task completed (exit 0) or every task that has not is dead
or blocked (exit 2); killed at any point, the same command resumes from the state file.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from taskfleet.errors import DEFAULT_OUTAGE_SECONDS, QueueUnavailableError, TaskfleetError
from taskfleet.events.schema import EventType, dumps_line, make_event
from taskfleet.events.sinks import EVENT_QUEUE_MAX_ATTEMPTS, FileEventSink
from taskfleet.flows.flow_state import Counts, FlowState, file_digest
from taskfleet.flows.graph import DependencyGraph
from taskfleet.queues.base import Queue, SendInterrupted
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.tasks.limits import TaskLimits
from taskfleet.tasks.readers import open_task_file, read_entries, validated

#: Schemes whose queue keeps the dependency state itself: their workers release tasks.
STATEFUL_SCHEMES = ("memory", "sqlite", "redis")
#: Tasks per send call; the state marks them sent after each call, so this is also the most
#: a kill inside a send call can send twice.
SEND_CHUNK = 100
EVENT_BATCH = 500
#: The lease of the events read in one batch: long enough to commit and ack them (a lease
#: that expires first only repeats them, which changes nothing), short because the events a
#: killed coordinator was reading stay hidden that long from the one that resumes. 10 s is
#: Pub/Sub's shortest ack deadline.
EVENT_LEASE_SECONDS = 10.0
POLL_SECONDS = 1.0
#: How often, at most, the dead letters are read back while the flow has dead or sent tasks
#: and no event came.
RECONCILE_SECONDS = 5.0
PROGRESS_SECONDS = 2.0
RETRY_BASE, RETRY_CAP = 0.5, 10.0

T = TypeVar("T")


@dataclass
class FlowOptions:
    queue_url: str
    task_file: str
    event_queue_url: str
    state_path: Path
    events_file: Path | None = None
    outage_seconds: float = DEFAULT_OUTAGE_SECONDS
    poll_seconds: float = POLL_SECONDS


@dataclass
class FlowOutcome:
    counts: Counts
    dead: list[str]
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.counts.completed == self.counts.total else 2


def refuse_stateful(url: str) -> None:
    """A queue that keeps the dependency state needs no coordinator: say so and stop."""
    from taskfleet.queues import backend_class

    cls = backend_class(url)  # a bare `job.db` is a sqlite queue too
    scheme = cls.schemes[0]
    if cls.tracks_dependencies or scheme in STATEFUL_SCHEMES:
        raise TaskfleetError(
            f"a {scheme}:// queue keeps the flow's dependencies itself, and its workers release "
            "each task when its last dependency completes: load the flow with `taskfleet "
            "load-queue` and run workers; `taskfleet flow run` is for sqs://, pubsub:// and fq://"
        )


def read_flow(task_file: str) -> list[Task]:
    """The tasks of a task file, with their dependencies checked (unknown ids, a task that
    waits for itself, cycles: one line naming the place; nothing is recorded)."""
    graph = DependencyGraph()
    tasks: list[Task] = []
    limits = TaskLimits.from_env()
    with open_task_file(task_file) as (f, name, fmt):
        unit, entries, check = read_entries(f, name, fmt, limits)
        for position, task in validated(name, unit, entries, check, limits, 0, None, True):
            graph.add(task.id, task.after, f"{name}: {unit} {position}")
            tasks.append(task)
    graph.check()
    return tasks


class Coordinator:
    """One run of `taskfleet flow run` (see the module docstring)."""

    def __init__(
        self,
        options: FlowOptions,
        queue: Queue,
        events: Queue,
        state: FlowState,
        *,
        notify: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> None:
        self.options = options
        self.queue = queue
        self.events = events
        self.state = state
        self.notify = notify
        self.stop = stop or threading.Event()
        self.out = FileEventSink(options.events_file) if options.events_file else None
        self.sent_now = 0
        self.repeated = 0  # completions and dead letters of tasks already settled
        self._rng = random.Random()
        self._last_reconcile = 0.0
        self._last_progress = 0.0
        self._last_line = ""

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> FlowOutcome:
        counts = self.state.counts()
        if counts.dead:
            self.reconcile()
        while not self.stop.is_set():
            self.send_ready()
            counts = self.state.counts()
            self.progress(counts)
            if counts.finished:
                if not counts.dead or not self.reconcile():
                    break
                continue
            got = self.follow_events()
            if not got and (counts.dead or counts.sent):
                now = time.monotonic()
                if now - self._last_reconcile >= RECONCILE_SECONDS:
                    self.reconcile()
        counts = self.state.counts()
        self.progress(counts, force=True)
        if self.out is not None:
            self.out.close()
        return FlowOutcome(counts, self.state.dead_ids(), interrupted=self.stop.is_set())

    def send_ready(self) -> None:
        """Send what may run now, `SEND_CHUNK` tasks per call, each chunk marked sent as soon
        as the queue confirmed it."""
        while not self.stop.is_set():
            tasks = self.state.to_send(SEND_CHUNK)
            if not tasks:
                return
            self._riding_out("sending tasks", lambda batch=tasks: self.queue.send(batch))
            self.state.mark_sent(t.id for t in tasks)
            self.sent_now += len(tasks)

    def follow_events(self) -> int:
        """Read one batch of events: write them to the events file, commit what they change,
        then ack them. Returns how many messages were read."""
        messages = self._riding_out(
            "reading the event queue",
            lambda: self.events.receive(
                EVENT_BATCH, EVENT_LEASE_SECONDS, wait_seconds=self.options.poll_seconds
            ),
        )
        if not messages:
            return 0
        events = [m.task.data for m in messages if isinstance(m.task.data, dict)]
        if self.out is not None:
            for event in events:
                self.out.emit_line(dumps_line(event))
            self.out.flush()
        applied = self.state.apply(events)
        if applied.repeated:
            self.repeated += applied.repeated
            self.notify(
                f"{applied.repeated:,} event(s) about tasks already settled (read again after "
                "a restart, or a task that ran twice): the first outcome stands, nothing is "
                "released twice"
            )
        if applied.dead_lettered:
            self.report_blocked(applied.dead_lettered)
        self._riding_out("acking events", lambda: self.events.ack(messages))
        return len(messages)

    def reconcile(self) -> bool:
        """Read the queue's dead letters back: a dead task that is not there any more was
        redriven (it is sent again), a sent one that is there was dead-lettered. Returns True
        when anything changed."""
        self._last_reconcile = time.monotonic()
        held = {d.task.id for d in self._riding_out("reading the dead letters", self._dead_ids)}
        redriven, dead = self.state.reconcile(held)
        if redriven:
            self.notify(f"{len(redriven):,} dead-lettered task(s) were redriven: following them")
        if dead:
            self.report_blocked(dead)
        return bool(redriven or dead)

    def _dead_ids(self) -> list[Any]:
        return list(self.queue.dead_letters())

    def report_blocked(self, dead_ids: list[str]) -> None:
        """One line per dead-lettered task naming what waits for it; a `task_blocked` event
        per blocked task in the events file."""
        blocked = self.state.blocked_by(dead_ids)
        by_dead: dict[str, list[str]] = {}
        for task_id, dead_id in blocked:
            by_dead.setdefault(dead_id, []).append(task_id)
        for dead_id in dead_ids:
            waiting = by_dead.get(dead_id, [])
            shown = ", ".join(waiting[:5])
            if len(waiting) > 5:
                shown += f" and {len(waiting) - 5:,} more"
            self.notify(
                f"task {dead_id!r} was dead-lettered"
                + (f"; {len(waiting):,} task(s) wait for it, blocked: {shown}" if waiting else "")
            )
        if self.out is not None and blocked:
            for task_id, dead_id in blocked:
                event = make_event(EventType.TASK_BLOCKED, task_id=task_id, blocked_by=dead_id)
                self.out.emit(event)
            self.out.flush()

    def progress(self, counts: Counts, *, force: bool = False) -> None:
        line = counts.line()
        now = time.monotonic()
        if line != self._last_line and (force or now - self._last_progress >= PROGRESS_SECONDS):
            self.notify(line)
            self._last_line = line
            self._last_progress = now

    # -- outages -------------------------------------------------------------------------------

    def _riding_out(self, doing: str, call: Callable[[], T]) -> T:
        """`call`, again after its queue came back when it raised `QueueUnavailableError`
        (probing with `stats`, backing off with jitter), until `outage_seconds` have passed."""
        away_since: float | None = None
        tries = 0
        while True:
            try:
                result = call()
            except (QueueUnavailableError, SendInterrupted) as exc:
                cause = exc.cause if isinstance(exc, SendInterrupted) else exc
                if not isinstance(cause, QueueUnavailableError):
                    raise
                now = time.monotonic()
                if away_since is None:
                    away_since = now
                    self.notify(
                        f"{cause} ({doing}); waiting for it to come back "
                        f"(up to {self.options.outage_seconds:g} s)"
                    )
                if now - away_since >= self.options.outage_seconds:
                    raise QueueUnavailableError(
                        cause.queue,
                        f"{cause.reason}; it stayed away longer than "
                        f"{self.options.outage_seconds:g} s, so the flow stopped; run the same "
                        "command again to resume",
                    ) from None
                delay = min(RETRY_CAP, RETRY_BASE * 2**tries) * (0.5 + 0.5 * self._rng.random())
                tries += 1
                if self.stop.wait(delay):
                    raise KeyboardInterrupt from None
                continue
            if away_since is not None:
                self.notify(f"the queue is back after {time.monotonic() - away_since:.1f} s")
            return result


def open_flow(options: FlowOptions) -> tuple[FlowState, int]:
    """The flow's state: created from the task file on the first run, checked against it on
    a rerun. Returns the state and how many tasks the first run recorded (0 on a rerun)."""
    digest = file_digest(options.task_file)
    state = FlowState(options.state_path)
    try:
        if state.created:
            _check_same_flow(state, options, digest)
            return state, 0
        tasks = read_flow(options.task_file)
        state.create(
            tasks,
            {
                "queue": redact(options.queue_url),
                "task_file": str(Path(options.task_file).resolve()),
                "task_file_sha256": digest,
            },
        )
        return state, len(tasks)
    except BaseException:
        created = state.created
        state.close()
        if not created:  # nothing recorded: leave no file that looks like a flow
            for suffix in ("", "-wal", "-shm"):
                Path(f"{options.state_path}{suffix}").unlink(missing_ok=True)
        raise


def _check_same_flow(state: FlowState, options: FlowOptions, digest: str) -> None:
    where = state.path
    if state.meta("queue") != redact(options.queue_url):
        raise TaskfleetError(
            f"{where}: this state belongs to the flow run on {state.meta('queue')}, not "
            f"{redact(options.queue_url)}; give another --state for a new flow"
        )
    if state.meta("task_file_sha256") != digest:
        raise TaskfleetError(
            f"{where}: {options.task_file} changed since this flow started; a running flow "
            "keeps the tasks it started with: run the changed file as a new flow (another "
            "--state and queue), or restore the file to resume"
        )


def run_flow(
    options: FlowOptions,
    *,
    notify: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> FlowOutcome:
    """Open everything, run the coordinator, close everything."""
    from taskfleet.queues import open_queue

    refuse_stateful(options.queue_url)
    state, recorded = open_flow(options)
    with contextlib.closing(state):
        if recorded:
            notify(f"flow: {recorded:,} tasks recorded in {options.state_path}")
        else:
            notify(f"flow: resuming from {options.state_path}")
        # The event queue first: on Pub/Sub, events published before its subscription exists
        # would be lost.
        with (
            open_queue(options.event_queue_url, max_attempts=EVENT_QUEUE_MAX_ATTEMPTS) as events,
            open_queue(options.queue_url) as queue,
        ):
            coordinator = Coordinator(options, queue, events, state, notify=notify, stop=stop)
            return coordinator.run()
