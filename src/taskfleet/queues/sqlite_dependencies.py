"""The dependency state of a SQLite queue: what its held tasks wait for, and their release.

Tasks that wait for others (`Task.after`) are held in a state of their own (HELD, outside the
index `receive` reads). Three small tables beside the queue's keep what a flow needs: the edges
(`dependency id, task id`, keyed by the dependency, so an ack finds the tasks that wait for what
it completed), the count of dependencies each held task still waits for (only for a task that
waits for two or more: one that waits for a single task, most of a fan-out, is released when
that task completes, so it costs no row), and the results of the completed tasks that others
wait for. An ack batch is a handful of set-based statements in its one transaction: one pass
over the edges of the rows it completed that counts per dependent, an UPDATE of the counts that
exist, one UPDATE that makes visible the held tasks whose last dependency this was.

Kept apart from `taskfleet.queues.sqlite` so that the flat queue's module says only what every
queue pays for; every method here runs inside a transaction the queue opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from taskfleet.flows.graph import DependencyGraph

if TYPE_CHECKING:
    from taskfleet.tasks import Task
    from taskfleet.tasks.batches import TaskBatch

#: The state of a task that waits for others (see `taskfleet.queues.sqlite` for the rest).
HELD = 4


class SQLiteDependencies:
    """The dependency tables of one queue (`name`) whose tasks are in `table`."""

    def __init__(self, name: str, table: str) -> None:
        self.name = name
        self.table = table
        self.deps = f'"q_{name}_deps"'  # (dep, task): task waits for dep
        self.waits = f'"q_{name}_waits"'  # held task -> dependencies not done yet
        self.results = f'"q_{name}_results"'  # results of done tasks that others wait for
        self._ready = False  # the three tables exist (made on the first flow loaded)

    # -- schema ---------------------------------------------------------------------------

    def ensure_tables(self, c: sqlite3.Connection) -> None:
        """The tables of the dependency state (inside a write transaction); a queue file made
        before flows existed gets them on its first change."""
        if self._ready:
            return
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.deps} (dep TEXT NOT NULL, task TEXT NOT NULL, "
            "PRIMARY KEY (dep, task)) WITHOUT ROWID"
        )
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.waits} (task_id TEXT PRIMARY KEY, "
            "pending INTEGER NOT NULL) WITHOUT ROWID"
        )
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.results} (task_id TEXT PRIMARY KEY, "
            "result TEXT) WITHOUT ROWID"
        )
        c.execute(
            f'CREATE INDEX IF NOT EXISTS "q_{self.name}_held" ON {self.table}(seq) WHERE state = 4'
        )
        self._ready = True

    def has_tables(self, c: sqlite3.Connection) -> bool:
        """Whether the dependency tables exist (another process may have made them since this
        queue was opened without `create`)."""
        if not self._ready:
            found = c.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (f"q_{self.name}_deps",),
            ).fetchone()
            self._ready = found is not None
        return self._ready

    def purge(self, c: sqlite3.Connection) -> None:
        """Forget every dependency (the queue's tasks are being deleted)."""
        if self.has_tables(c):
            for table in (self.deps, self.waits, self.results):
                c.execute(f"DELETE FROM {table}")

    # -- load -----------------------------------------------------------------------------

    def hold(
        self,
        c: sqlite3.Connection,
        waits: Mapping[str, Sequence[str]],
        start: int,
        *,
        all_new: bool = False,
        inserted_held: bool = False,
    ) -> list[str]:
        """Record the dependencies of the tasks of `waits` (id -> the ids it waits for) that
        this load inserted (`seq > start`), and hold them: set-based, one statement each.
        Returns the ids held (a task the queue held before the load is left as it is).

        `all_new` says the load inserted every task of `waits` (no id was present before),
        which spares the lookup of each in the queue's table; `inserted_held` that the insert
        gave them the held state already."""
        self.ensure_tables(c)
        payload = orjson.dumps(waits).decode()
        if all_new:
            new = "SELECT key AS task_id, value AS after FROM json_each(?)"
        else:
            new = (
                f"SELECT j.key AS task_id, j.value AS after FROM json_each(?) AS j "
                f"JOIN {self.table} AS q ON q.task_id = j.key AND q.seq > {int(start)}"
            )
        c.execute(
            f"INSERT OR IGNORE INTO {self.deps}(dep, task) SELECT a.value, n.task_id "
            f"FROM ({new}) AS n, json_each(n.after) AS a",
            (payload,),
        )
        # Only a task that waits for two or more gets a count: one that waits for a single task
        # is released when that task completes (most tasks of a fan-out; no row to write at
        # load, none to count down on ack).
        multi = {task_id: after for task_id, after in waits.items() if len(after) > 1}
        if multi:
            c.execute(
                f"INSERT OR REPLACE INTO {self.waits}(task_id, pending) "
                f"SELECT n.task_id, json_array_length(n.after) FROM ({new}) AS n WHERE true",
                (orjson.dumps(multi).decode(),),
            )
        if all_new:
            held = list(waits)
        else:
            held = [row[0] for row in c.execute(f"SELECT n.task_id FROM ({new}) AS n", (payload,))]
        if not inserted_held:
            c.execute(
                f"UPDATE {self.table} SET state = 4 WHERE seq > {int(start)} AND state = 0 "
                "AND task_id IN (SELECT key FROM json_each(?))",
                (payload,),
            )
        return held

    def check_and_settle(
        self, c: sqlite3.Connection, graph: DependencyGraph, start: int, held: set[str]
    ) -> int:
        """Check the load's dependencies (`taskfleet.flows.graph`: a bad graph raises, and the
        transaction inserts nothing), then release the tasks this load `held` whose
        dependencies were all done before it. Returns how many of them stay held."""
        if not graph.has_dependencies:
            return 0
        graph.check(exists=lambda ids: self._present(c, ids))
        if not held:
            return 0
        t = self.table
        if not start:  # the queue was empty: nothing was done before this load
            return len(held)
        named = sorted({other for after in graph.after.values() for other in after})
        done = {
            row[0]
            for row in c.execute(
                f"SELECT task_id FROM {t} WHERE state = 2 AND seq <= ? AND "
                "task_id IN (SELECT value FROM json_each(?))",
                (start, json_text(named)),
            )
        }
        if done:
            ready, counts = [], []
            for task_id, after in graph.after.items():
                if task_id not in held:
                    continue
                n = sum(other in done for other in after)
                if not n:
                    continue
                if n == len(after):
                    ready.append(task_id)
                if len(after) > 1:  # only these have a count (see `hold`)
                    counts.append((n, task_id))
            c.executemany(
                f"UPDATE {self.waits} SET pending = pending - ? WHERE task_id = ?", counts
            )
            c.execute(
                f"UPDATE {t} SET state = 0, visible_at = 0 WHERE state = 4 AND seq > ? AND "
                "task_id IN (SELECT value FROM json_each(?))",
                (start, json_text(ready)),
            )
        (still,) = c.execute(
            f"SELECT count(*) FROM {t} WHERE state = 4 AND seq > ?", (start,)
        ).fetchone()
        return int(still)

    def _present(self, c: sqlite3.Connection, ids: Iterable[str]) -> list[str]:
        """Which of `ids` the queue holds, in any state."""
        return [
            row[0]
            for row in c.execute(
                f"SELECT task_id FROM {self.table} WHERE task_id IN "
                "(SELECT value FROM json_each(?))",
                (json_text(list(ids)),),
            )
        ]

    # -- ack ------------------------------------------------------------------------------

    def complete(
        self, c: sqlite3.Connection, done: list[str], results: Mapping[str, Any] | None
    ) -> int:
        """`done` were just completed (inside the transaction that completed them): keep the
        results of those others wait for, count down their dependents, and make visible the
        held tasks whose last dependency this was. Returns how many were made visible."""
        if not done or not self.has_tables(c):
            return 0
        done_json = json_text(done)
        waited = [
            row[0]
            for row in c.execute(
                f"SELECT DISTINCT dep FROM {self.deps} WHERE dep IN "
                "(SELECT value FROM json_each(?))",
                (done_json,),
            )
        ]
        if not waited:
            return 0
        c.executemany(
            f"INSERT OR REPLACE INTO {self.results}(task_id, result) VALUES (?, ?)",
            _result_rows(waited, results or {}),
        )
        # One pass over the edges of what was completed, counted per dependent (a correlated
        # count per dependent would probe every completed id for each of them). A dependent
        # with no count waits for one task only (see `hold`): this completed it.
        per_task = c.execute(
            f"SELECT d.task, count(*), w.pending FROM {self.deps} AS d "
            f"LEFT JOIN {self.waits} AS w ON w.task_id = d.task "
            "WHERE d.dep IN (SELECT value FROM json_each(?)) GROUP BY d.task",
            (json_text(waited),),
        ).fetchall()
        ready = [task_id for task_id, n, pending in per_task if pending is None or pending <= n]
        counted = [(n, task_id) for task_id, n, pending in per_task if pending is not None]
        if counted:
            c.executemany(
                f"UPDATE {self.waits} SET pending = pending - ? WHERE task_id = ?", counted
            )
        if not ready:
            return 0
        return c.execute(
            f"UPDATE {self.table} SET state = 0, visible_at = 0 WHERE state = 4 AND task_id IN "
            "(SELECT value FROM json_each(?))",
            (json_text(ready),),
        ).rowcount

    # -- receive and reports --------------------------------------------------------------

    def results_for(self, c: sqlite3.Connection, tasks: list[Task]) -> list[dict[str, Any] | None]:
        """For each task, what its dependencies returned (id -> result), or None for a task
        that waited for nothing.

        The results come back as one JSON object built by SQLite (one parse for the batch,
        not one a row: an aggregate of a fan-in reads hundreds)."""
        found: list[dict[str, Any] | None] = [None] * len(tasks)
        waiting = [(index, task.after) for index, task in enumerate(tasks) if task.after]
        if not waiting or not self.has_tables(c):
            return found
        named: set[str] = set().union(*(after for _, after in waiting))
        (text,) = c.execute(
            f"SELECT json_group_object(task_id, json(result)) FROM {self.results} "
            "WHERE task_id IN (SELECT value FROM json_each(?))",
            (json_text(list(named)),),
        ).fetchone()
        get = (orjson.loads(text) if text else {}).get
        for index, after in waiting:
            found[index] = dict(zip(after, map(get, after), strict=True))
        return found

    def held_count(self, c: sqlite3.Connection) -> int:
        """How many tasks wait for others."""
        if not self.has_tables(c):
            return 0
        (held,) = c.execute(f"SELECT count(*) FROM {self.table} WHERE state = 4").fetchone()
        return int(held)

    def dependents_of(self, c: sqlite3.Connection, task_ids: list[str] | None) -> list[str]:
        """The tasks not done that wait, directly or through others, for `task_ids` (None:
        for every dead letter), by one recursive query over the dependency edges."""
        if not self.has_tables(c):
            return []
        if task_ids is None:
            roots = f"SELECT task_id FROM {self.table} WHERE state = 3"
            params: tuple[Any, ...] = ()
        else:
            roots = "SELECT value FROM json_each(?)"
            params = (json_text(task_ids),)
        rows = c.execute(
            f"WITH RECURSIVE below(id) AS ({roots} UNION SELECT d.task FROM {self.deps} AS d "
            f"JOIN below ON d.dep = below.id) SELECT q.task_id FROM below JOIN {self.table} AS q "
            "ON q.task_id = below.id WHERE q.state != 2 AND q.state != 3 ORDER BY q.seq",
            params,
        ).fetchall()
        return [row[0] for row in rows]


def json_text(values: list[Any]) -> str:
    """A JSON array for json_each, as text: SQLite 3.45 and later read a BLOB as binary JSONB,
    so bytes from orjson must not be bound directly."""
    return orjson.dumps(values).decode()


def _locator(batch: TaskBatch) -> Callable[[str], str | None]:
    """Names the line of a task of `batch` (for an error only), keeping its ids and positions
    but not its bodies."""
    source, unit, positions, ids = batch.source, batch.unit, batch.positions, batch.ids

    def locate(task_id: str) -> str | None:
        try:
            return f"{source}: {unit} {positions[ids.index(task_id)]}"
        except ValueError:
            return None

    return locate


def waiting_tasks(batch: TaskBatch, graph: DependencyGraph) -> Mapping[str, Sequence[str]]:
    """The tasks of a validated batch that wait for others (id -> the ids), added to `graph`.
    Only bodies that mention "after" are parsed again: a flat batch costs a substring search."""
    if batch.afters is not None:  # decoded by the fast path of the reader already
        if batch.afters:
            graph.add_batch(batch.afters, _locator(batch))
        return batch.afters
    waits: dict[str, Sequence[str]] = {}
    for index, body in enumerate(batch.bodies):
        if '"after"' not in body:
            continue
        after = orjson.loads(body).get("after")
        if after:
            task_id = batch.ids[index]
            waits[task_id] = tuple(after)
            graph.add(task_id, after, batch.place(index))
    return waits


def _result_rows(task_ids: list[str], results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(id, result as JSON text) of each task of `task_ids`: one comprehension for the usual
    case, where every result is JSON, and `_result_json` task by task only when one is not."""
    get, dumps = results.get, orjson.dumps
    try:
        return [(task_id, dumps(get(task_id)).decode()) for task_id in task_ids]
    except TypeError:  # orjson.JSONEncodeError is one
        return [(task_id, _result_json(get(task_id))) for task_id in task_ids]


def _result_json(result: Any) -> str:
    """A task's result as JSON text for the results table; one that JSON cannot hold is
    kept as its text, so a dependent still sees something of it."""
    try:
        return orjson.dumps(result).decode()
    except TypeError:
        return orjson.dumps(str(result)).decode()
