"""The embedded queue behind a `--task-file` run, which makes local runs resumable.

The task file is loaded idempotently into a SQLite queue kept beside the event log, so running
the same command again skips tasks already done. One run at a time owns the state file (an
exclusive lock), which lets a new run take back, at once, the leases an interrupted run left
behind: no other consumer can hold them. Leased tasks whose outcome the interrupted run had
already written to the event log are acknowledged instead of being run again.

The task file is the source of truth: a rerun gives the tasks not yet completed the data the
file has now, and says which completed tasks changed (`--rerun-changed` runs them again).

A state belongs to one task file, recorded in it when first used: another file on it is
refused. Keying the default state by the task file instead would still leave both files'
events in the one event log beside it, where the summary would count them together and the
recovery of an interrupted run would read another file's completion of the same task id as
this one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import orjson

from taskfleet.errors import TaskfleetError, path_error
from taskfleet.events.schema import EventType
from taskfleet.monitoring.summary_text import counted
from taskfleet.queues.base import DataChanges, Queue
from taskfleet.redact import redact
from taskfleet.tasks import TaskSource


def default_state_path(event_log_file: str | None) -> Path:
    """`events.jsonl` -> `events.state.db` in the same folder."""
    if event_log_file:
        log_path = Path(event_log_file)
        return log_path.with_name(log_path.name.split(".", 1)[0] + ".state.db")
    return Path("taskfleet.state.db")


def state_url(state_path: str | os.PathLike[str]) -> str:
    """The URL of the embedded queue kept in the state file (a SQLite queue)."""
    return "sqlite:///" + quote(os.fspath(state_path))


class StateLock:
    """An exclusive lock on a state file, held for the whole run."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+")
        except OSError as exc:
            raise path_error(
                self.path.with_suffix(""),
                exc,
                "state file",
                "give --state (or --event-log-file) a path in a writable folder",
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise TaskfleetError(
                f"{self.path.with_suffix('')}: the state file is in use by {owner}; wait for "
                "that run to finish, or give this run its own --state and --event-log-file"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()
            self._file = None


@dataclass
class Recovery:
    """What an interrupted earlier run left behind, and what was done about it."""

    leased: int = 0
    acknowledged_from_log: int = 0

    @property
    def rerun(self) -> int:
        return self.leased - self.acknowledged_from_log


_COMPLETED = EventType.TASK_COMPLETED.encode()  # lines without it are not parsed


def completed_ids_in_log(event_log_file: str | None, candidates: Iterable[str]) -> dict[str, Any]:
    """Which of `candidates` have a final `task_completed` event in the log, with the result
    it records (what a queue that keeps a flow's state hands to the tasks that wait)."""
    wanted = set(candidates)
    found: dict[str, Any] = {}
    if not wanted or not event_log_file or not os.path.exists(event_log_file):
        return found
    with open(event_log_file, "rb") as f:
        for line in f:
            if _COMPLETED not in line:
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line from the crash
            task_id = event.get("task_id")
            if (
                task_id in wanted
                and event.get("event_type") == EventType.TASK_COMPLETED
                and not event.get("retry")
            ):
                found[task_id] = event.get("result")
    return found


def recover(queue: Queue, event_log_file: str | None) -> Recovery:
    """Take back the leases of an interrupted run (the caller holds the state lock, so no
    other consumer can hold one). The queue must list its leases (`Queue.lists_leases`)."""
    leased = queue.leased_ids()
    if not leased:
        return Recovery()
    finished = completed_ids_in_log(event_log_file, leased)
    if not finished:
        acked = 0
    elif queue.tracks_dependencies:
        acked = queue.ack_ids(finished, finished)
    else:
        acked = queue.ack_ids(finished)
    queue.release_all()
    return Recovery(leased=len(leased), acknowledged_from_log=acked)


def source_key(source: TaskSource, state_path: Path) -> str:
    """What names a run's tasks in its state: a local file by its path from the state's
    folder (so that the folder may move, and any working directory gives the same key), a
    URL or '-' as given, a worker's own task_source by that."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text == "-" or "://" in text:
            return text
        return os.path.relpath(os.path.abspath(text), os.path.abspath(state_path.parent))
    return "the worker's task_source"


_STATE_TABLE = "taskfleet_state"


def claim_state(state_path: Path, key: str) -> None:
    """Record in the state file which task source it keeps (a state from before this record
    takes the current one); refuse a state that keeps another. The caller holds the lock."""
    try:
        with contextlib.closing(sqlite3.connect(state_path, timeout=60.0)) as conn, conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_STATE_TABLE} "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = conn.execute(
                f"SELECT value FROM {_STATE_TABLE} WHERE key = 'task_source'"
            ).fetchone()
            if row is None:
                conn.execute(f"INSERT INTO {_STATE_TABLE} VALUES ('task_source', ?)", (key,))
    except sqlite3.Error as exc:
        raise TaskfleetError(f"{state_path}: cannot read the state file: {exc}") from None
    if row is not None and row[0] != key:
        raise TaskfleetError(
            f"{state_path} keeps the progress of {redact(row[0])}, not of {redact(key)} "
            "(paths from the state's folder); a state keeps one task file's: give this run "
            "its own --event-log-file (its state goes beside it), or delete "
            f"{state_path.name} and its event log to start over"
        )


def describe_changes(changes: DataChanges, redrive_command: str) -> list[str]:
    """What a rerun did with the tasks whose data changed in the task file, a line each."""

    def agree(number: int, one: str, many: str) -> str:
        return one if number == 1 else many

    lines = []
    if n := changes.updated:
        lines.append(
            f"{counted(n, 'task')} not yet completed {agree(n, 'takes', 'take')} the new data "
            "of the task file"
        )
    if n := changes.rerun:
        lines.append(
            f"{counted(n, 'task')} completed or dead-lettered before {agree(n, 'runs', 'run')} "
            "again with the new data of the task file (--rerun-changed)"
        )
    if n := changes.dead_updated:
        lines.append(
            f"{counted(n, 'dead-lettered task')} {agree(n, 'takes', 'take')} the new data of "
            f"the task file: `{redrive_command}`, then run again, to run {agree(n, 'it', 'them')}"
        )
    if n := changes.completed_changed:
        examples = ", ".join(changes.completed_examples)
        more = ", ..." if n > len(changes.completed_examples) else ""
        lines.append(
            f"{counted(n, 'completed task')} changed in the task file ({examples}{more}) and "
            f"{agree(n, 'is', 'are')} not run again: add --rerun-changed to run "
            f"{agree(n, 'it', 'them')} with the new data"
        )
    return lines
