"""The durable state of a coordinated flow (`taskfleet flow run`), in one SQLite file.

SQS and Pub/Sub keep no dependency state, so the coordinator keeps it here: every task of
the flow with its data, how many of its dependencies have not completed yet, the results of
completed tasks that others wait for, and where each task is in its life:

    WAITING --last dependency completed--> TO_SEND --queue confirmed--> SENT
    SENT/TO_SEND --task_completed--> COMPLETED        SENT/TO_SEND --task_dead_lettered--> DEAD
    DEAD --task_completed (after `taskfleet redrive`)--> COMPLETED

Every change is one transaction, so a coordinator killed at any point finds on restart a
state that is exactly before or exactly after each change. The coordinator commits the
completions it read before it acks them on the event queue (an event read twice finds its
task completed already and changes nothing), and commits SENT right after the queue
confirmed a send: a task is sent again only when the kill fell between the queue taking it
and that commit (see docs/flows.md).

Why SQLite: one file, atomic commits, and the dependents of a task are an index lookup,
so a flow of 100,000 tasks needs no more memory than a batch of events.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson

from taskfleet.errors import TaskfleetError
from taskfleet.tasks import Task

SCHEMA_VERSION = "1"


class TaskState(IntEnum):
    WAITING = 0
    TO_SEND = 1
    SENT = 2
    COMPLETED = 3
    DEAD = 4


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    state INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    has_dependents INTEGER NOT NULL,
    result BLOB
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, seq);
CREATE TABLE IF NOT EXISTS edges (
    dependency TEXT NOT NULL,
    dependent TEXT NOT NULL,
    PRIMARY KEY (dependency, dependent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_by_dependent ON edges (dependent, dependency);
"""


@dataclass
class Counts:
    """The flow's tasks by state; `blocked` are waiting tasks behind a dead letter."""

    total: int = 0
    waiting: int = 0
    to_send: int = 0
    sent: int = 0
    completed: int = 0
    dead: int = 0
    blocked: int = 0

    @property
    def finished(self) -> bool:
        """Nothing more can happen without a redrive: every task completed, dead or blocked."""
        return self.to_send == 0 and self.sent == 0 and self.waiting == self.blocked

    def line(self) -> str:
        running = f"{self.sent:,} sent"
        if self.to_send:
            running += f", {self.to_send:,} to send"
        text = (
            f"flow: {self.completed:,}/{self.total:,} completed, {running}, "
            f"{self.waiting - self.blocked:,} waiting"
        )
        if self.dead or self.blocked:
            text += f", {self.dead:,} dead-lettered, {self.blocked:,} blocked"
        return text


@dataclass
class Applied:
    """What a batch of events changed."""

    completed: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    released: int = 0
    repeated: int = 0  # events about a task whose state they had changed already
    foreign: int = 0  # events about tasks that are not in this flow


class FlowState:
    """One flow's state file (see the module docstring)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """Open (creating) the state file; with `read_only`, open an existing one for reading
        only (`status`, `monitor` and `flow status` beside a running coordinator: a WAL reader
        never blocks its writer, and a file that is not a flow state is left untouched)."""
        self.path = Path(path)
        try:
            if read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
                return
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise TaskfleetError(f"{self.path}: cannot open the flow's state file: {exc}") from None

    def close(self) -> None:
        self.db.close()

    # -- meta ----------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def created(self) -> bool:
        return self.meta("schema") is not None

    def create(self, tasks: Sequence[Task], meta: dict[str, str]) -> None:
        """Record every task of the flow, in one transaction (an interrupted start leaves an
        empty state, and the next start begins again)."""
        has_dependents = {d for task in tasks for d in task.after}
        with self._transaction() as c:
            c.executemany(
                "INSERT INTO tasks (id, data, state, remaining, has_dependents) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        t.id,
                        orjson.dumps(t.data),
                        TaskState.WAITING if t.after else TaskState.TO_SEND,
                        len(set(t.after)),
                        int(t.id in has_dependents),
                    )
                    for t in tasks
                ),
            )
            c.executemany(
                "INSERT OR IGNORE INTO edges (dependency, dependent) VALUES (?, ?)",
                ((d, t.id) for t in tasks for d in t.after),
            )
            c.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [*meta.items(), ("schema", SCHEMA_VERSION)],
            )

    # -- sending -------------------------------------------------------------------------------

    def to_send(self, limit: int) -> list[Task]:
        """Up to `limit` tasks that may run now, in file order, each with the results of the
        tasks it waited for."""
        rows = self.db.execute(
            "SELECT id, data FROM tasks WHERE state = ? ORDER BY seq LIMIT ?",
            (TaskState.TO_SEND, limit),
        ).fetchall()
        tasks = []
        for task_id, data in rows:
            results = {
                dependency: None if result is None else orjson.loads(result)
                for dependency, result in self.db.execute(
                    "SELECT e.dependency, t.result FROM edges e JOIN tasks t "
                    "ON t.id = e.dependency WHERE e.dependent = ?",
                    (task_id,),
                )
            }
            tasks.append(Task(task_id, orjson.loads(data), (), results or None))
        return tasks

    def mark_sent(self, ids: Iterable[str]) -> None:
        with self._transaction() as c:
            c.executemany(
                "UPDATE tasks SET state = ? WHERE id = ? AND state = ?",
                ((TaskState.SENT, i, TaskState.TO_SEND) for i in ids),
            )

    # -- what the event queue says ---------------------------------------------------------------

    def apply(self, events: Iterable[dict[str, Any]]) -> Applied:
        """Fold `task_completed` and `task_dead_lettered` events in, in one transaction: a
        completion stores the result (for tasks others wait for) and releases each dependent
        whose last dependency it was; a dead letter marks the task dead. Events of other
        kinds, repeats and tasks outside the flow change nothing."""
        applied = Applied()
        with self._transaction() as c:
            for event in events:
                kind = event.get("event_type")
                if kind == "task_completed" and not event.get("retry"):
                    self._complete(c, event, applied)
                elif kind == "task_dead_lettered":
                    self._dead(c, str(event.get("task_id")), applied)
        return applied

    def _complete(self, c: sqlite3.Connection, event: dict[str, Any], applied: Applied) -> None:
        task_id = str(event.get("task_id"))
        row = c.execute(
            "SELECT state, has_dependents FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            applied.foreign += 1
            return
        state, has_dependents = row
        if state == TaskState.COMPLETED:
            applied.repeated += 1
            return
        result = orjson.dumps(event.get("result")) if has_dependents else None
        c.execute(
            "UPDATE tasks SET state = ?, result = ? WHERE id = ?",
            (TaskState.COMPLETED, result, task_id),
        )
        applied.completed.append(task_id)
        if not has_dependents:
            return
        c.execute(
            "UPDATE tasks SET remaining = remaining - 1 WHERE id IN "
            "(SELECT dependent FROM edges WHERE dependency = ?)",
            (task_id,),
        )
        released = c.execute(
            "UPDATE tasks SET state = ? WHERE state = ? AND remaining = 0 AND id IN "
            "(SELECT dependent FROM edges WHERE dependency = ?)",
            (TaskState.TO_SEND, TaskState.WAITING, task_id),
        ).rowcount
        applied.released += released

    def _dead(self, c: sqlite3.Connection, task_id: str, applied: Applied) -> None:
        row = c.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            applied.foreign += 1
            return
        if row[0] not in (TaskState.SENT, TaskState.TO_SEND):
            applied.repeated += 1
            return
        c.execute("UPDATE tasks SET state = ? WHERE id = ?", (TaskState.DEAD, task_id))
        applied.dead_lettered.append(task_id)

    def reconcile(self, dead_in_queue: set[str]) -> tuple[list[str], list[str]]:
        """Match the state with the ids the queue holds as dead letters, in one transaction:
        a DEAD task not among them was redriven (it is SENT again); a SENT task among them was
        dead-lettered without its event reaching the coordinator (it is DEAD). Returns
        (redriven, newly dead)."""
        with self._transaction() as c:
            dead = [
                i for (i,) in c.execute("SELECT id FROM tasks WHERE state = ?", (TaskState.DEAD,))
            ]
            redriven = [i for i in dead if i not in dead_in_queue]
            newly_dead = [
                i
                for i in dead_in_queue
                if (row := c.execute("SELECT state FROM tasks WHERE id = ?", (i,)).fetchone())
                and row[0] == TaskState.SENT
            ]
            c.executemany(
                "UPDATE tasks SET state = ? WHERE id = ?", ((TaskState.SENT, i) for i in redriven)
            )
            c.executemany(
                "UPDATE tasks SET state = ? WHERE id = ?", ((TaskState.DEAD, i) for i in newly_dead)
            )
        return redriven, newly_dead

    # -- counting ------------------------------------------------------------------------------

    def blocked_by(self, dead_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(blocked task, the dead-lettered task it waits for) for every task that waits,
        directly or through others, for one of `dead_ids` and has not completed."""
        pairs: list[tuple[str, str]] = []
        for dead_id in dead_ids:
            rows = self.db.execute(
                "WITH RECURSIVE down(id) AS ("
                " SELECT dependent FROM edges WHERE dependency = ?"
                " UNION SELECT e.dependent FROM edges e JOIN down ON e.dependency = down.id)"
                " SELECT down.id FROM down JOIN tasks t ON t.id = down.id"
                " WHERE t.state = ? ORDER BY t.seq",
                (dead_id, TaskState.WAITING),
            )
            pairs.extend((task_id, dead_id) for (task_id,) in rows)
        return pairs

    def dead_ids(self) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM tasks WHERE state = ? ORDER BY seq", (TaskState.DEAD,)
        )
        return [task_id for (task_id,) in rows]

    def counts(self) -> Counts:
        counts = Counts()
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"):
            counts.total += n
            name = TaskState(state).name.lower()
            setattr(counts, name, n)
        if counts.dead:
            (counts.blocked,) = self.db.execute(
                "WITH RECURSIVE down(id) AS ("
                " SELECT e.dependent FROM edges e JOIN tasks d ON d.id = e.dependency"
                " WHERE d.state = ?"
                " UNION SELECT e.dependent FROM edges e JOIN down ON e.dependency = down.id)"
                " SELECT COUNT(*) FROM down JOIN tasks t ON t.id = down.id WHERE t.state = ?",
                (TaskState.DEAD, TaskState.WAITING),
            ).fetchone()
        return counts

    # -- plumbing ------------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def default_flow_state_path(task_file: str | Path) -> Path:
    """Next to the task file: `tasks.json` -> `tasks.json.flow-state.db`."""
    path = Path(task_file)
    return path.with_name(path.name + ".flow-state.db")


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a task file, so a rerun can tell that it is the same flow."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
