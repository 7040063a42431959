"""`LocalTaskQueue(parallel=N)`: run code-tasks on this machine, on the `Worker` runtime.

`insert(tasks)` then `execute()`, or `insert_all(tasks)`, runs the tasks in N long-lived child
processes with everything a worker has: `--max-runtime` kills, the retry policy, dead letters,
events. The tasks are streamed from the iterables into the run's queue and then run; the
results come back as a `LocalRun`.

By default (a throwaway run) that queue is a `memory://` queue of this process, made for the
run and dropped after it: nothing of it needs to outlive the process, so it pays for no file
and no transaction, and calling the same thing again, in this process or a new one, runs the
tasks again, as python-task-queue users expect. Give `state=PATH` for a resumable run: its
queue is the embedded SQLite queue kept in that file (the same path as a worker's
`--task-file` run), so a run that stopped (Ctrl-C, a crash) picks up where it stopped, and a
repeat runs only what is not done. A repeat that finds everything done warns that nothing ran
and why, rather than answering silently with "0 tasks".
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from taskfleet.api.marking import as_task, is_one_task, process_code_task
from taskfleet.queues.memory import drop_store, keep_every_result
from taskfleet.tasks import Task

if TYPE_CHECKING:
    from taskfleet.worker.worker import RunSummary


class NothingRanWarning(UserWarning):
    """A resumable `LocalTaskQueue` run found every task done by an earlier run."""


@dataclass
class LocalRun:
    """What a `LocalTaskQueue` run did: the worker's summary, and each task's outcome from
    the run's events (`results`: what completed tasks returned; `errors`: the last error of
    each task that failed an attempt and did not complete)."""

    summary: RunSummary
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return self.summary.counts.completed

    @property
    def dead_lettered(self) -> int:
        return self.summary.counts.dead_lettered

    @property
    def exit_code(self) -> int:
        return self.summary.exit_code


class _Outcomes:
    """Each task's outcome from a run's events: what a completed task returned, and the last
    error of a task that failed an attempt and did not complete."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        results, errors = self.results, self.errors
        for event in events:
            task_id = event.get("task_id")
            if task_id is None:
                continue
            if event.get("event_type") == "task_completed":
                results[task_id] = event.get("result")
                errors.pop(task_id, None)
            elif event.get("exception") and task_id not in results:
                errors[task_id] = event["exception"]

    def read(self, events_path: Path) -> None:
        """Add the events of a log (a resumable run's holds its earlier runs' too)."""
        if not events_path.exists():
            return
        with open(events_path, "rb") as file:
            for line in file:
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    self.add((event,))


class LocalTaskQueue:
    """Runs code-tasks in `parallel` child processes of this machine; see the module docstring.

    `state`: a file for a resumable run (default: none, every call runs its tasks).
    `event_log_file`: keep the run's events (default: beside `state`, or a temporary file).
    Any `Worker` option works by name (`max_runtime=60`, `retry_on_exception=True`, ...).
    """

    def __init__(
        self,
        parallel: int | None = None,
        *,
        state: str | os.PathLike[str] | None = None,
        event_log_file: str | os.PathLike[str] | None = None,
        **worker_options: Any,
    ) -> None:
        self.parallel = parallel
        self.state = Path(state) if state is not None else None
        self.event_log_file = Path(event_log_file) if event_log_file is not None else None
        self.worker_options = worker_options
        self._pending: list[Iterable[Any]] = []

    def insert(self, tasks: Iterable[Any] | Any) -> None:
        """Add tasks (an iterable, or one task) to the next `execute`; iterables are read
        then, not now."""
        self._pending.append([tasks] if is_one_task(tasks) else tasks)

    def purge(self) -> None:
        """Forget the tasks inserted and not yet executed."""
        self._pending.clear()

    def insert_all(self, tasks: Iterable[Any] | Any) -> LocalRun:
        """Insert and run at once (python-task-queue's name): `insert` then `execute`."""
        self.insert(tasks)
        return self.execute()

    def execute(self) -> LocalRun:
        """Run every task inserted so far; returns what the run did."""
        pending, self._pending = self._pending, []
        with tempfile.TemporaryDirectory(prefix="taskfleet-local-") as scratch:
            state = self.state or Path(scratch) / "local.state.db"
            events = self.event_log_file or (
                state.with_name(state.name.split(".", 1)[0] + ".events.jsonl")
                if self.state is not None
                else Path(scratch) / "events.jsonl"
            )
            # A run of its own temporary log takes the outcomes as the events are written; a
            # log the user named (or one beside a resumable state) may hold earlier runs' too,
            # and is read whole at the end, as the results of every run it records.
            outcomes = _Outcomes()
            temporary = self.event_log_file is None and self.state is None
            summary = self._run(pending, state, events, outcomes.add if temporary else None)
            if not temporary:
                outcomes.read(events)
        run = LocalRun(summary, outcomes.results, outcomes.errors)
        if self.state is not None and not summary.counts.received and summary.completed_before:
            warnings.warn(
                f"0 tasks ran: all {summary.completed_before:,} were done by an earlier run "
                f"whose state is {self.state}; delete it (or give another state) to run them "
                "again",
                NothingRanWarning,
                stacklevel=2,
            )
        return run

    def _run(
        self,
        pending: list[Iterable[Any]],
        state: Path,
        events: Path,
        observer: Callable[[list[dict[str, Any]]], None] | None,
    ) -> RunSummary:
        from taskfleet.worker.worker import Worker

        options: dict[str, Any] = {"event_log_file": str(events)}
        scratch_queue = None
        if self.state is None:
            scratch_queue = f"taskfleet-local-{uuid.uuid4().hex}"
            options["queue"] = f"memory://{scratch_queue}"
            # Loaded as it runs, a task may come after the one it waits for completed.
            keep_every_result(scratch_queue)
        else:
            options["state"] = str(state)
        if self.parallel is not None:
            options["num_simultaneous_tasks"] = self.parallel
        options.update(self.worker_options)
        worker = Worker(
            process_code_task,
            args=[],
            task_source=lambda: _unique_tasks(itertools.chain.from_iterable(pending)),
            **options,
        )
        worker.event_observer = observer
        worker.load_as_it_runs = scratch_queue is not None
        try:
            return worker.run(exit=False)
        finally:
            if scratch_queue is not None:
                drop_store(scratch_queue)


def _unique_tasks(items: Iterable[Any]) -> Iterator[Task]:
    """The tasks, each id once: the same call inserted twice is one task (its id is derived
    from its content), run once."""
    seen: set[str] = set()
    for item in items:
        task = as_task(item)
        if task.id not in seen:
            seen.add(task.id)
            yield task
