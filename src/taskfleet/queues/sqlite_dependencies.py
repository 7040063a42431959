"""The dependency state of a SQLite queue: what its held tasks wait for, and their release.

Tasks that wait for others (`Task.after`) are held in a state of their own (HELD, outside the
index `receive` reads), and counted (`taskfleet_queues.held`), not indexed: nothing reads the
held tasks as a set but `stats`, and a count tells an ack of a flat queue that nothing can wait
for what it completed. Two small tables beside the queue's keep what a flow needs:

- `q_NAME_dependents` (dependency id -> the ids of the tasks that wait for it, as JSON arrays):
  one row per task that others wait for, not one per edge. A fan-out of 98 parts is one row of
  98 ids; a part that an aggregate waits for is one row of one id. The row keeps apart the
  tasks that wait for this one `alone` (released when it completes, with nothing to count or
  look up: the list goes as it is into the UPDATE that releases them) and those that wait for
  others too (`shared`, counted down in `q_NAME_waits`), and, once it completed, its result
  (the row exists exactly for the tasks whose results must be kept, so the ack's one UPDATE
  of these rows both stores the results and finds the dependents). Built at load by an
  `INSERT ... SELECT` a batch, in SQLite: no Python runs per edge.
- `q_NAME_waits`: the count of dependencies a held task still waits for, only for a task that
  waits for two or more (one that waits for a single task, most of a fan-out, is released when
  that task completes, so it costs no row).

An ack batch is a handful of set-based statements in its one transaction: one UPDATE of the
completed ids' rows of dependents (their primary key) that stores the results and returns the
lists, one pass over the `shared` ids that counts per dependent, an UPDATE of those counts, one
UPDATE that makes visible the held tasks whose last dependency this was.

A queue file written before (an edge table `q_NAME_deps` of one `(dependency, task)` row an
edge, a table of results `q_NAME_results` and a partial index `q_NAME_held`) is upgraded when
it is opened: see `upgrade`.

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
        self.dependents = f'"q_{name}_dependents"'  # dep -> JSON arrays of the tasks waiting
        self.waits = f'"q_{name}_waits"'  # held task -> dependencies not done yet
        self._ready = False  # the two tables exist

    # -- schema ---------------------------------------------------------------------------

    def ensure_tables(self, c: sqlite3.Connection) -> None:
        """The tables of the dependency state (inside a write transaction); a queue file made
        before flows existed gets them on its first change."""
        if self._ready:
            return
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.dependents} (dep TEXT PRIMARY KEY, "
            "alone TEXT NOT NULL, shared TEXT NOT NULL, result TEXT) WITHOUT ROWID"
        )
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.waits} (task_id TEXT PRIMARY KEY, "
            "pending INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._ready = True

    def has_tables(self, c: sqlite3.Connection) -> bool:
        """Whether the dependency tables exist (another process may have made them since this
        queue was opened without `create`)."""
        if not self._ready:
            found = c.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (f"q_{self.name}_dependents",),
            ).fetchone()
            self._ready = found is not None
        return self._ready

    def needs_upgrade(self, c: sqlite3.Connection) -> bool:
        """Whether the file is of the shape before this one (see `upgrade`): two reads."""
        columns = {row[1] for row in c.execute("PRAGMA table_info(taskfleet_queues)")}
        if "held" not in columns:
            return True
        found = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (f"q_{self.name}_deps",),
        ).fetchone()
        return found is not None

    def upgrade(self, c: sqlite3.Connection) -> None:
        """Bring a queue file of an earlier shape to this one (inside a write transaction,
        so a flow half done goes on where it was):

        - `taskfleet_queues` gets its `held` column (0 for every queue: a queue that held
          tasks had an edge table, and is counted when it is itself upgraded);
        - the edge table `q_NAME_deps` becomes rows of `q_NAME_dependents`, one a dependency,
          which take the results kept in `q_NAME_results`; both are dropped with the partial
          index `q_NAME_held`; the held tasks are counted.

        The counts table keeps its shape. Idempotent: another process may have upgraded the
        file between the check and the write lock."""
        columns = {row[1] for row in c.execute("PRAGMA table_info(taskfleet_queues)")}
        if "held" not in columns:
            c.execute("ALTER TABLE taskfleet_queues ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
        old = f'"q_{self.name}_deps"'
        found = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (f"q_{self.name}_deps",),
        ).fetchone()
        if found is None:
            return
        self._ready = False
        self.ensure_tables(c)
        # A task with a count waited for two or more (or, written by a version before that,
        # for one with a count of 1, which counts down to release it all the same).
        counted = f"(SELECT task_id FROM {self.waits})"
        for column, where in (("alone", "NOT IN"), ("shared", "IN")):
            edges = f"SELECT dep, task FROM {old} WHERE task {where} {counted}"
            self._add_dependents(c, column, edges, ())
        results = f'"q_{self.name}_results"'
        c.execute(
            f"UPDATE {self.dependents} SET result = (SELECT r.result FROM {results} AS r "
            f"WHERE r.task_id = {self.dependents}.dep)"
        )
        # Counted while the old index of the held tasks still serves the count.
        c.execute(
            f"UPDATE taskfleet_queues SET held = (SELECT count(*) FROM {self.table} "
            "WHERE state = 4) WHERE name = ?",
            (self.name,),
        )
        c.execute(f"DROP TABLE {old}")
        c.execute(f"DROP TABLE IF EXISTS {results}")
        c.execute(f'DROP INDEX IF EXISTS "q_{self.name}_held"')

    def purge(self, c: sqlite3.Connection) -> None:
        """Forget every dependency (the queue's tasks are being deleted)."""
        if self.has_tables(c):
            for table in (self.dependents, self.waits):
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
        if all_new:
            new = "SELECT key AS task_id, value AS after FROM json_each(?)"
        else:
            new = (
                f"SELECT j.key AS task_id, j.value AS after FROM json_each(?) AS j "
                f"JOIN {self.table} AS q ON q.task_id = j.key AND q.seq > {int(start)}"
            )
        edges = (
            f"SELECT a.value AS dep, n.task_id AS task FROM ({new}) AS n, json_each(n.after) AS a"
        )
        # Only a task that waits for two or more gets a count: one that waits for a single task
        # is released when that task completes (most tasks of a fan-out; no row to write at
        # load, none to count down on ack).
        alone: dict[str, Sequence[str]] = {}
        multi: dict[str, Sequence[str]] = {}
        for task_id, after in waits.items():
            (alone if len(after) == 1 else multi)[task_id] = after
        if alone:
            self._add_dependents(c, "alone", edges, (orjson.dumps(alone).decode(),))
        if multi:
            shared = orjson.dumps(multi).decode()
            self._add_dependents(c, "shared", edges, (shared,))
            c.execute(
                f"INSERT OR REPLACE INTO {self.waits}(task_id, pending) "
                f"SELECT n.task_id, json_array_length(n.after) FROM ({new}) AS n WHERE true",
                (shared,),
            )
        if all_new and inserted_held:
            return list(waits)
        payload = orjson.dumps(waits).decode()
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

    def _add_dependents(
        self, c: sqlite3.Connection, column: str, edges: str, params: tuple[Any, ...]
    ) -> None:
        """Add the `edges` (a SELECT of `dep, task`) to the `column` list (alone or shared) of
        the dependencies' rows: one row a dependency; a dependency whose dependents came in an
        earlier batch (or load), or earlier in this one, gets these appended to its list.

        The tasks that wait for one task alone are grouped by SQLite first (a fan-out lists
        many for one dependency, and appending them one by one would write its row again for
        each). Those that wait for several are not: most dependencies have one such dependent
        (each part of a fan-in has its aggregate), and the sort of GROUP BY cost more than the
        rare append."""
        if column == "alone":
            select = f"e.dep, json_group_array(e.task), '[]' FROM ({edges}) AS e WHERE true "
            select += "GROUP BY e.dep"
        else:
            select = f"e.dep, '[]', json_array(e.task) FROM ({edges}) AS e WHERE true"
        c.execute(
            f"INSERT INTO {self.dependents}(dep, alone, shared) SELECT {select} "
            f"ON CONFLICT(dep) DO UPDATE SET {_APPENDED}",
            params,
        )

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
        self,
        c: sqlite3.Connection,
        done: list[str],
        results: Mapping[str, Any] | None,
        *,
        modern: bool = True,
    ) -> int:
        """`done` were just completed (inside the transaction that completed them): keep the
        results of those others wait for, count down their dependents, and make visible the
        held tasks whose last dependency this was. Returns how many were made visible.

        `modern`: the library has `UPDATE ... FROM` and `RETURNING` (SQLite 3.35); without
        them a SELECT of the rows comes before their UPDATE."""
        if not done:
            return 0
        # Nothing held, nothing can wait for these: a flat queue stops here.
        (held,) = c.execute(
            "SELECT held FROM taskfleet_queues WHERE name = ?", (self.name,)
        ).fetchone()
        if not held or not self.has_tables(c):
            return 0
        texts = _result_texts(done, results or {})
        if modern:
            # {id: the result's JSON text}: json_each hands out each text as it is.
            rows = c.execute(
                f"UPDATE {self.dependents} SET result = r.value FROM json_each(?) AS r "
                f"WHERE {self.dependents}.dep = r.key RETURNING dep, alone, shared",
                (orjson.dumps(texts).decode(),),
            ).fetchall()
        else:
            rows = c.execute(
                f"SELECT dep, alone, shared FROM {self.dependents} WHERE dep IN "
                "(SELECT value FROM json_each(?))",
                (json_text(done),),
            ).fetchall()
            c.executemany(
                f"UPDATE {self.dependents} SET result = ? WHERE dep = ?",
                [(texts[dep], dep) for dep, _, _ in rows],
            )
        if not rows:
            return 0
        # The lists' texts joined into one JSON array each, no id parsed in Python. A task
        # that waits for these alone is ready; one that waits for others too is counted down
        # by one pass over its ids (it appears once for each of these it waits for).
        ready = _joined([alone for _, alone, _ in rows])
        shared = _joined([shared for _, _, shared in rows])
        if shared != "[]":
            per_task = c.execute(
                f"SELECT j.value, count(*), w.pending FROM json_each(?) AS j "
                f"JOIN {self.waits} AS w ON w.task_id = j.value GROUP BY j.value",
                (shared,),
            ).fetchall()
            last = [task_id for task_id, n, pending in per_task if pending <= n]
            if last:  # these were waiting for these completions last
                ready = _joined([ready, json_text(last)])
            c.executemany(
                f"UPDATE {self.waits} SET pending = pending - ? WHERE task_id = ?",
                [(n, task_id) for task_id, n, _ in per_task],
            )
        if ready == "[]":
            return 0
        released = c.execute(
            f"UPDATE {self.table} SET state = 0, visible_at = 0 WHERE state = 4 AND task_id IN "
            "(SELECT value FROM json_each(?))",
            (ready,),
        ).rowcount
        c.execute(
            "UPDATE taskfleet_queues SET held = held - ? WHERE name = ?", (released, self.name)
        )
        return released

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
            f"SELECT json_group_object(dep, json(result)) FROM {self.dependents} "
            "WHERE dep IN (SELECT value FROM json_each(?)) AND result IS NOT NULL",
            (json_text(list(named)),),
        ).fetchone()
        get = (orjson.loads(text) if text else {}).get
        for index, after in waiting:
            found[index] = dict(zip(after, map(get, after), strict=True))
        return found

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
            f"WITH RECURSIVE below(id) AS ({roots} UNION SELECT j.value FROM below "
            f"JOIN {self.dependents} AS d ON d.dep = below.id, json_each({_BOTH}) AS j) "
            f"SELECT q.task_id FROM below JOIN {self.table} AS q ON q.task_id = below.id "
            "WHERE q.state != 2 AND q.state != 3 ORDER BY q.seq",
            params,
        ).fetchall()
        return [row[0] for row in rows]


def _concatenated(first: str, second: str) -> str:
    """SQL for the JSON array of the ids of two arrays of JSON strings (`first`, `second`:
    SQL expressions), by their text: no id is parsed."""
    return (
        f"CASE WHEN {second} = '[]' THEN {first} WHEN {first} = '[]' THEN {second} "
        f"ELSE substr({first}, 1, length({first}) - 1) || ',' || substr({second}, 2) END"
    )


#: The upsert of a dependency's row: the tasks of this load appended to those of the row.
_APPENDED = (
    f"alone = {_concatenated('alone', 'excluded.alone')}, "
    f"shared = {_concatenated('shared', 'excluded.shared')}"
)
#: Every task a dependency's row lists.
_BOTH = _concatenated("d.alone", "d.shared")


def _joined(lists: list[str]) -> str:
    """One JSON array of the ids of `lists` (arrays of JSON strings, as text), by their
    text: what SQLite grouped is handed back to it without parsing an id in Python."""
    return "[" + ",".join(text[1:-1] for text in lists if text != "[]") + "]"


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


def _result_texts(task_ids: list[str], results: Mapping[str, Any]) -> dict[str, str]:
    """id -> result as JSON text, for each task of `task_ids`: one comprehension for the usual
    case, where every result is JSON, and `_result_json` task by task only when one is not."""
    get, dumps = results.get, orjson.dumps
    try:
        return {task_id: dumps(get(task_id)).decode() for task_id in task_ids}
    except TypeError:  # orjson.JSONEncodeError is one
        return {task_id: _result_json(get(task_id)) for task_id in task_ids}


def _result_json(result: Any) -> str:
    """A task's result as JSON text for the results table; one that JSON cannot hold is
    kept as its text, so a dependent still sees something of it."""
    try:
        return orjson.dumps(result).decode()
    except TypeError:
        return orjson.dumps(str(result)).decode()
