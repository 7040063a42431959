"""What a coordinated flow's state file says, for `status`, `monitor` and `flow status`.

On SQS and Pub/Sub the queue knows nothing of a flow: the tasks that wait for their
dependencies, and those blocked behind a dead letter, exist only in the state file of
`taskfleet flow run` (`flow_state`). The commands that count a queue read them from there.

They read it only: the file is opened read-only (a file that is not a flow state is never
changed, let alone given tables), and a WAL reader neither blocks the coordinator writing it
nor sees a change half made, so reading while the flow runs is safe. Each count is one read
transaction, so waiting and blocked always come from the same moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from taskfleet.errors import TaskfleetError
from taskfleet.flows.flow_state import SCHEMA_VERSION, Counts, FlowState, default_flow_state_path
from taskfleet.redact import redact

T = TypeVar("T")

_WHERE_IT_IS = "`taskfleet flow run` writes it (its --state, default TASK_FILE.flow-state.db)"


@dataclass(frozen=True)
class HeldTasks:
    """The tasks the coordinator holds, counted as `QueueStats` counts them on the queues that
    keep a flow themselves: `waiting` are all the tasks not in the queue yet (behind their
    dependencies, or released and about to be sent), `blocked` those of them behind a dead
    letter, which run only after a redrive."""

    waiting: int
    blocked: int

    @classmethod
    def of(cls, counts: Counts) -> HeldTasks:
        return cls(waiting=counts.waiting + counts.to_send, blocked=counts.blocked)


def open_flow_state(path: str | Path, queue_url: str | None = None) -> FlowState:
    """The flow state at `path`, opened read-only and checked: it exists, it is the state of
    a recorded flow, and (given `queue_url`) of a flow run on that queue. Anything else is
    one line naming the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise TaskfleetError(f"{path}: no flow state file here; {_WHERE_IT_IS}")
    state = FlowState(path, read_only=True)
    try:
        _check_state(state)
        if queue_url is not None:
            _check_queue(state, queue_url)
    except BaseException:
        state.close()
        raise
    return state


def held_tasks(state: FlowState) -> HeldTasks:
    """Waiting and blocked now (see the module docstring)."""
    return read_at_once(state, lambda s: HeldTasks.of(s.counts()))


def read_at_once(state: FlowState, read: Callable[[FlowState], T]) -> T:
    """`read(state)` in one read transaction, so every figure it reads is of the same moment;
    an SQLite error is one line naming the file."""
    try:
        state.db.execute("BEGIN")
        try:
            return read(state)
        finally:
            state.db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise TaskfleetError(f"{state.path}: cannot read the flow's state: {exc}") from None


def find_flow_state(flow_state: str | Path | None, task_file: str | None) -> Path | None:
    """The state to read: the one given, else the default one of `task_file` when it exists
    (a local task file whose flow `taskfleet flow run` coordinates), else None."""
    if flow_state is not None:
        return Path(flow_state)
    if task_file is None or "://" in task_file:
        return None
    path = default_flow_state_path(task_file)
    return path if path.is_file() else None


def same_queue(recorded: str, queue_url: str) -> bool:
    """Whether two URLs name the same queue: scheme, name and path; the options (region,
    endpoint, max_attempts...) may be spelled differently, or left out, by a reader."""
    a, b = urlsplit(recorded), urlsplit(redact(queue_url))
    return (a.scheme, a.netloc, a.path.rstrip("/")) == (b.scheme, b.netloc, b.path.rstrip("/"))


def _check_state(state: FlowState) -> None:
    try:
        tables = {
            name for (name,) in state.db.execute("SELECT name FROM sqlite_master WHERE type = ?",
                                                 ("table",))
        }  # fmt: skip
        schema = state.meta("schema") if {"meta", "tasks", "edges"} <= tables else None
    except sqlite3.DatabaseError:
        tables, schema = set(), None
    if not {"meta", "tasks", "edges"} <= tables:
        raise TaskfleetError(
            f"{state.path}: not the state file of a flow; {_WHERE_IT_IS}. Check the path"
        )
    if schema is None:
        raise TaskfleetError(
            f"{state.path}: no flow recorded in it yet: its `taskfleet flow run` is starting, "
            "or stopped before it recorded the flow (run it again)"
        )
    if schema != SCHEMA_VERSION:
        raise TaskfleetError(
            f"{state.path}: a flow state of version {schema}, which this taskfleet (version "
            f"{SCHEMA_VERSION}) cannot read: use the taskfleet that runs the flow"
        )


def _check_queue(state: FlowState, queue_url: str) -> None:
    recorded = state.meta("queue") or ""
    if not same_queue(recorded, queue_url):
        raise TaskfleetError(
            f"{state.path}: this is the state of the flow run on {recorded}, not on "
            f"{redact(queue_url)}; give the state of that queue's flow (its `flow run --state`)"
        )
