"""The SQLite queue's rows of dependents (`queues/sqlite_dependencies.py`).

A queue file written by the version before them (one edge table row an edge, `q_NAME_deps`,
a results table, a partial index `q_NAME_held`, no `held` count) with a flow half done: the
current code upgrades it on open and drains it, each task once, with its dependencies'
results. The old tables are written here by SQL, as that version wrote them. And a
dependency's lists, appended to across statements and loads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from taskfleet.queues.sqlite import SQLiteQueue
from taskfleet.tasks import Task

LONG = 3600.0

# (id, after, state, result): state 2 done (its result kept), 0 waiting, 4 held
OLD_FLOW = [
    ("prep", (), 2, {"rows": 3}),
    ("part-1", ("prep",), 2, 10),
    ("part-2", ("prep",), 0, None),
    ("part-3", ("prep",), 0, None),
    ("agg", ("part-1", "part-2", "part-3"), 4, None),  # count 2 left
    ("report", ("agg",), 4, None),  # waits for one: no count
    ("other", (), 0, None),
    ("other-next", ("other",), 4, None),
]


def write_old_file(path: Path) -> None:
    """The schema and rows of the earlier version, a flow half done."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        CREATE TABLE taskfleet_queues (name TEXT PRIMARY KEY, max_attempts INTEGER NOT NULL,
          created REAL NOT NULL, inserted INTEGER NOT NULL DEFAULT 0,
          duplicates INTEGER NOT NULL DEFAULT 0, waiting INTEGER NOT NULL DEFAULT 0,
          leased INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
          dead INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE "q_tasks" (seq INTEGER PRIMARY KEY AUTOINCREMENT,
          task_id TEXT NOT NULL UNIQUE, body BLOB NOT NULL, state INTEGER NOT NULL DEFAULT 0,
          visible_at REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
          lease INTEGER NOT NULL DEFAULT 0, error TEXT);
        CREATE INDEX "q_tasks_pending" ON "q_tasks"(visible_at) WHERE state < 2;
        CREATE INDEX "q_tasks_dead" ON "q_tasks"(seq) WHERE state = 3;
        CREATE TABLE "q_tasks_deps" (dep TEXT NOT NULL, task TEXT NOT NULL,
          PRIMARY KEY (dep, task)) WITHOUT ROWID;
        CREATE TABLE "q_tasks_waits" (task_id TEXT PRIMARY KEY, pending INTEGER NOT NULL)
          WITHOUT ROWID;
        CREATE TABLE "q_tasks_results" (task_id TEXT PRIMARY KEY, result TEXT) WITHOUT ROWID;
        CREATE INDEX "q_tasks_held" ON "q_tasks"(seq) WHERE state = 4;
        """
    )
    for task_id, after, state, result in OLD_FLOW:
        body = {"id": task_id, "data": {}} | ({"after": list(after)} if after else {})
        conn.execute(
            'INSERT INTO "q_tasks"(task_id, body, state) VALUES (?, ?, ?)',
            (task_id, orjson.dumps(body).decode(), state),
        )
        for other in after:
            conn.execute('INSERT INTO "q_tasks_deps"(dep, task) VALUES (?, ?)', (other, task_id))
        if state == 2:
            conn.execute(
                'INSERT INTO "q_tasks_results"(task_id, result) VALUES (?, ?)',
                (task_id, orjson.dumps(result).decode()),
            )
    conn.execute("INSERT INTO \"q_tasks_waits\"(task_id, pending) VALUES ('agg', 2)")
    conn.execute(
        "INSERT INTO taskfleet_queues(name, max_attempts, created, inserted, waiting, done) "
        "VALUES ('tasks', 3, 0, 8, 3, 2)"
    )
    conn.close()


def drain(queue: SQLiteQueue) -> list[tuple[str, dict | None]]:
    """Receive and ack until nothing is left; each task's id and dependency results, in the
    order received. A task's result is its number of dependencies."""
    seen: list[tuple[str, dict | None]] = []
    while messages := queue.receive(10, LONG):
        seen += [(m.task.id, m.dependency_results) for m in messages]
        queue.ack(messages, {m.task.id: len(m.task.after) for m in messages})
    return seen


@pytest.mark.parametrize("create", [True, False], ids=["opened-to-write", "opened-existing"])
def test_a_flow_half_done_in_an_old_file_goes_on_after_the_upgrade(
    tmp_path: Path, create: bool
) -> None:
    path = tmp_path / "old.db"
    write_old_file(path)
    queue = SQLiteQueue(path, create=create)
    stats = queue.stats()
    assert (stats.waiting, stats.visible, stats.completed) == (3, 3, 2)
    assert queue.dependents(["part-2"]) == ["agg", "report"]
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "q_tasks_deps" not in names and "q_tasks_held" not in names
    assert "q_tasks_dependents" in names

    seen = drain(queue)
    ids = [task_id for task_id, _ in seen]
    assert sorted(ids) == ["agg", "other", "other-next", "part-2", "part-3", "report"]
    assert ids.index("agg") > max(ids.index("part-2"), ids.index("part-3"))
    assert ids.index("report") > ids.index("agg")
    results = dict(seen)
    assert results["part-2"] == {"prep": {"rows": 3}}
    assert results["agg"] == {"part-1": 10, "part-2": 1, "part-3": 1}
    assert results["report"] == {"agg": 3}
    assert results["other-next"] == {"other": 0}
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (8, 0, 0)
    queue.close()
    # opened again: nothing left to upgrade, nothing changes
    again = SQLiteQueue(path)
    assert (again.stats().completed, again.stats().waiting) == (8, 0)
    again.close()


def test_the_lists_of_a_dependency_grow_across_batches_and_loads(tmp_path: Path) -> None:
    """A dependency's row is appended to when its dependents come in several statements: two
    tasks that wait for it and another (`shared`) in one batch, one that waits for it alone in
    the next batch, one more of each in a second load. Each is released once, when its last
    dependency completes."""
    queue = SQLiteQueue(tmp_path / "q.db")
    queue.send(
        [
            Task("a", {}),
            Task("x", {}),
            Task("both-1", {}, after=("a", "x")),
            Task("both-2", {}, after=("x", "a")),
            Task("alone-1", {}, after=("a",)),
        ],
        batch_size=4,
    )
    queue.send([Task("both-3", {}, after=("a", "x")), Task("alone-2", {}, after=("a",))])
    assert queue.stats().waiting == 5
    first = queue.receive(10, LONG)
    assert sorted(m.task.id for m in first) == ["a", "x"]
    queue.ack([m for m in first if m.task.id == "a"], {"a": "A"})
    alone = queue.receive(10, LONG)
    assert sorted(m.task.id for m in alone) == ["alone-1", "alone-2"]
    assert all(m.dependency_results == {"a": "A"} for m in alone)
    queue.ack([m for m in first if m.task.id == "x"], {"x": [1]})
    both = queue.receive(10, LONG)
    assert sorted(m.task.id for m in both) == ["both-1", "both-2", "both-3"]
    assert all(m.dependency_results == {"a": "A", "x": [1]} for m in both)
    queue.ack([*alone, *both])
    stats = queue.stats()
    assert (stats.completed, stats.waiting, stats.remaining) == (7, 0, 0)
    queue.close()
