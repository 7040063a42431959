"""The embedded queue: one SQLite file, nothing to install, durable across crashes.

Many processes on one machine may share the file. WAL mode lets readers run beside the single
writer; every state change is one short `BEGIN IMMEDIATE` transaction (the write lock is taken
up front, so two processes never lease the same row), with a busy timeout and retries when the
file is locked.

One table per queue holds every task ever inserted, with its state (waiting, leased, done,
dead), the time it becomes visible, its attempt count and a lease token. A partial index over
the not-finished rows, ordered by visible time, serves `receive`; waiting rows are visible at 0,
so they come out in insertion order. Counters kept in the same transactions make `stats` O(1)
apart from a range scan over rows visible in the future (delayed retries and live leases, which
are few).

Tasks that wait for others (`Task.after`) are held in a state of their own (HELD, outside the
index `receive` reads); `taskfleet.queues.sqlite_dependencies` keeps what they wait for and
releases them. A flat queue pays for this one read of the held count an ack (nothing held:
nothing to look up).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import SplitResult, quote, unquote

import orjson

from taskfleet.errors import (
    QueueUnavailableError,
    QueueURLError,
    TaskFileError,
    TaskfleetError,
    path_error,
)
from taskfleet.flows.graph import DependencyGraph
from taskfleet.queues.base import (
    DEFAULT_QUEUE_NAME,
    DataChanges,
    DeadLetter,
    Message,
    Queue,
    QueueAddress,
    QueueNotFoundError,
    QueueStats,
    Received,
    SendResult,
    attempts_for_new_queue,
    expired_lease_error,
    queue_not_found,
)
from taskfleet.queues.sqlite_dependencies import HELD, SQLiteDependencies, waiting_tasks
from taskfleet.queues.sqlite_dependencies import json_text as _json_text
from taskfleet.tasks import Task
from taskfleet.tasks.model import as_tasks

if TYPE_CHECKING:
    from taskfleet.tasks.batches import TaskBatch

WAITING, LEASED, DONE, DEAD = 0, 1, 2, 3
#: `RETURNING` and `UPDATE ... FROM` (SQLite 3.35, 2021): with an older library (the system
#: SQLite of some Linux releases) the same steps take a SELECT before each UPDATE instead, in
#: the same transaction.
MODERN_SQL = sqlite3.sqlite_version_info >= (3, 35, 0)
_BUSY_RETRIES = 20


def parse_sqlite_url(url: str) -> tuple[Path, str, int | None]:
    """`sqlite:///rel/path.db` (three slashes: relative), `sqlite:////abs/path.db` (four:
    absolute), as in SQLAlchemy; a bare `path.db` works too. `?name=` picks a queue in the
    file. Returns the file, the queue name and the URL's max_attempts (None if not given)."""
    address = SQLiteQueue.parse_url(url)
    return SQLiteQueue.path_of(address), address.name, address.max_attempts


#: `sync=` of a SQLite queue URL -> SQLite's `synchronous` setting. In WAL mode, NORMAL loses
#: nothing committed to a crash of the process, and at most the last transactions (never the
#: file) to a crash of the machine; OFF never waits for the disk, and a crash of the machine
#: may corrupt the file.
_SYNC_MODES = {"normal": "NORMAL", "off": "OFF"}


class SQLiteQueue(Queue):
    """A queue stored in a SQLite file; see the module docstring for the design."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    example_url: ClassVar[str] = "sqlite:///path/to/queue.db"
    bare_path_suffixes: ClassVar[tuple[str, ...]] = (".db", ".sqlite", ".sqlite3")
    exact_counts: ClassVar[bool] = True
    idempotent_send: ClassVar[bool] = True
    # A load is one transaction, so a bad entry anywhere inserts nothing (the CLI says so).
    atomic_send: ClassVar[bool] = True
    bulk_load: ClassVar[bool] = True
    updates_data: ClassVar[bool] = True
    lists_leases: ClassVar[bool] = True
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    tracks_dependencies: ClassVar[bool] = True
    reports_consumer_activity: ClassVar[bool] = True

    #: `sync=off`: never wait for the disk (SQLite's `synchronous=OFF`), for a scratch queue
    #: that is deleted when its run ends (`LocalTaskQueue`'s temporary state).
    url_options: ClassVar[tuple[str, ...]] = ("sync",)

    def __init__(
        self,
        path: str | os.PathLike,
        name: str = DEFAULT_QUEUE_NAME,
        *,
        max_attempts: int | None = None,
        url: str | None = None,
        create: bool = True,
        sync: str = "normal",
    ) -> None:
        attempts = attempts_for_new_queue(max_attempts)
        if sync not in _SYNC_MODES:
            raise QueueURLError(
                f"sync={sync!r} for the SQLite queue {path}: say sync=normal (the default: a "
                "crash of the process or the machine loses nothing acknowledged) or sync=off "
                "(never wait for the disk: only for a queue thrown away after its run, since "
                "a crash of the machine can corrupt it)"
            )
        self._synchronous = _SYNC_MODES[sync]
        self.path = Path(path)
        self.name = name
        self.url = url or f"sqlite:///{self.path}" + (
            f"?name={name}" if name != DEFAULT_QUEUE_NAME else ""
        )
        self._table = f'"q_{name}"'
        self._flows = SQLiteDependencies(name, self._table)
        self._lock = threading.RLock()
        self._consumer: str | None = None  # named by `set_consumer`
        self._consumer_touched = 0.0
        if not create and not self.path.exists():
            raise queue_not_found(
                f"no queue file {self.path}", self.path.name, _queue_files(self.path)
            )
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            if create:
                self.max_attempts = self._ensure_schema(attempts)
            else:
                self.max_attempts = self._existing_max_attempts()
                with self._lock:
                    stale = self._flows.needs_upgrade(self._conn)
                if stale:  # a file of an earlier version: upgraded once, by its first opener
                    with self._write() as c:
                        self._flows.upgrade(c)
        except OSError as exc:
            raise path_error(
                self.path, exc, "queue", "the file and its folder must be writable"
            ) from None
        except sqlite3.Error as exc:
            raise TaskfleetError(
                f"{self.path}: cannot open the queue: {exc}; the file and its folder must be "
                "writable (and the disk not full)"
            ) from None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def split_url(cls, url: str) -> SplitResult:
        """A bare file name (`job.db?name=x`) reads as `sqlite:///job.db?name=x`."""
        if "://" not in url:
            path_text, _, query = url.partition("?")
            return SplitResult(cls.schemes[0], "", "/" + quote(path_text), query, "")
        return super().split_url(url)

    @classmethod
    def path_of(cls, address: QueueAddress) -> Path:
        """The file of a parsed SQLite queue URL."""
        parts = address.parts
        if parts.netloc:
            raise QueueURLError(
                f"{address.url!r}: a SQLite queue URL has no host; write "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path_text = unquote(parts.path)
        if path_text.startswith("/"):
            path_text = path_text[1:]
        if not path_text:
            raise QueueURLError(f"{address.url!r}: the SQLite queue URL names no file")
        return Path(path_text)

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> SQLiteQueue:
        return cls(
            cls.path_of(address),
            address.name,
            max_attempts=max_attempts,
            url=address.url,
            create=create,
            sync=address.options.get("sync", "normal"),
        )

    @classmethod
    def url_for(cls, address: QueueAddress, name: str) -> str:
        url = address.url
        base = url.split("?", 1)[0] if "://" in url else f"sqlite:///{cls.path_of(address)}"
        return f"{base}?name={name}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        # The page size applies only to a new file and must come before WAL mode is set. Large
        # pages make a million-task load cheaper (fewer B-tree splits and levels); receive and
        # ack, which touch a few pages a batch, do not suffer from them.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def _existing_max_attempts(self) -> int:
        """The max_attempts of this queue, which must exist in the file: nothing is written."""
        try:
            rows = self._conn.execute("SELECT name, max_attempts FROM taskfleet_queues").fetchall()
        except sqlite3.OperationalError:  # no such table: a SQLite file of something else
            self._conn.close()
            raise QueueNotFoundError(
                f"{self.path} holds no taskfleet queue (it is a SQLite file of something else)"
            ) from None
        stored = dict(rows)
        if self.name not in stored:
            self._conn.close()
            raise queue_not_found(f"no queue {self.name!r} in {self.path}", self.name, stored)
        return int(stored[self.name])

    def _ensure_schema(self, max_attempts: int) -> int:
        t = self._table
        with self._write() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS taskfleet_queues (name TEXT PRIMARY KEY, "
                "max_attempts INTEGER NOT NULL, created REAL NOT NULL, "
                "inserted INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0, "
                "waiting INTEGER NOT NULL DEFAULT 0, leased INTEGER NOT NULL DEFAULT 0, "
                "done INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0, "
                "held INTEGER NOT NULL DEFAULT 0)"
            )
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "task_id TEXT NOT NULL UNIQUE, body BLOB NOT NULL, "
                "state INTEGER NOT NULL DEFAULT 0, visible_at REAL NOT NULL DEFAULT 0, "
                "attempts INTEGER NOT NULL DEFAULT 0, lease INTEGER NOT NULL DEFAULT 0, "
                "error TEXT)"
            )
            c.execute(
                f'CREATE INDEX IF NOT EXISTS "q_{self.name}_pending" ON {t}(visible_at) '
                "WHERE state < 2"
            )
            c.execute(
                f'CREATE INDEX IF NOT EXISTS "q_{self.name}_dead" ON {t}(seq) WHERE state = 3'
            )
            self._flows.ensure_tables(c)
            if self._flows.needs_upgrade(c):
                self._flows.upgrade(c)
            c.execute(
                "INSERT OR IGNORE INTO taskfleet_queues(name, max_attempts, created) "
                "VALUES (?, ?, ?)",
                (self.name, max_attempts, time.time()),
            )
            (stored,) = c.execute(
                "SELECT max_attempts FROM taskfleet_queues WHERE name = ?", (self.name,)
            ).fetchone()
        return int(stored)

    # -- transactions ---------------------------------------------------------------------

    def _write(self) -> _WriteTransaction:
        return _WriteTransaction(self)

    def _counters(self, c: sqlite3.Connection, **deltas: int) -> None:
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return
        assignments = ", ".join(f"{k} = {k} + ?" for k in deltas)
        c.execute(
            f"UPDATE taskfleet_queues SET {assignments} WHERE name = ?",
            (*deltas.values(), self.name),
        )

    # -- protocol -------------------------------------------------------------------------

    # Tasks a send inserts with one statement (one JSON array, expanded by json_each).
    SEND_BATCH = 2000

    def send(self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = 0) -> SendResult:
        """Insert all tasks in one transaction: a bad task in the iterable inserts nothing.

        Tasks go in batches of `batch_size`, each as one JSON array that SQLite expands with
        json_each and inserts in C: binding two parameters a row through `executemany` cost
        more than the insert itself. One batch is alive at a time, so memory stays bounded for
        millions of tasks. Ids already present (in any state) are skipped and counted.
        """
        tasks = as_tasks(tasks)  # plain dicts too
        size = max(1, batch_size or self.SEND_BATCH)
        iterator = iter(tasks)
        seen = inserted = 0
        graph = DependencyGraph()
        held: set[str] = set()
        sql = (
            f"INSERT OR IGNORE INTO {self._table}(task_id, body) "
            "SELECT json_extract(value, '$.id'), value FROM json_each(?)"
        )
        with self._write() as c:
            start = self._last_seq(c)
            while chunk := list(islice(iterator, size)):
                seen += len(chunk)
                before = self._conn.total_changes
                c.execute(sql, (_batch_json(chunk),))
                inserted += self._conn.total_changes - before
                waits = {task.id: task.after for task in chunk if task.after}
                if waits:
                    for task_id, after in waits.items():
                        graph.add(task_id, after)
                    held.update(self._flows.hold(c, waits, start))
            still_held = self._flows.check_and_settle(c, graph, start, held)
            self._counters(
                c,
                inserted=inserted,
                waiting=inserted - still_held,
                held=still_held,
                duplicates=seen - inserted,
            )
        return SendResult(inserted=inserted, already_present=seen - inserted, ids_seen=seen)

    def _last_seq(self, c: sqlite3.Connection) -> int:
        (start,) = c.execute(f"SELECT coalesce(max(seq), 0) FROM {self._table}").fetchone()
        return int(start)

    def _changed_ids(
        self, c: sqlite3.Connection, assignments: str, where: str, params: tuple[Any, ...]
    ) -> list[str]:
        """`UPDATE` the queue's rows matching `where` and return the ids of those it changed
        (what a task completed now, and not before, counts down)."""
        t = self._table
        if MODERN_SQL:
            update = f"UPDATE {t} SET {assignments} WHERE {where} RETURNING task_id"
            return [row[0] for row in c.execute(update, params)]
        ids = [row[0] for row in c.execute(f"SELECT task_id FROM {t} WHERE {where}", params)]
        if ids:
            c.execute(f"UPDATE {t} SET {assignments} WHERE {where}", params)
        return ids

    def send_batches(self, batches: Iterable[TaskBatch]) -> SendResult:
        """Load validated batches (see `taskfleet.tasks.batches`) in one transaction.

        The bulk path of `load-queue`: each batch is one JSON object `{id: task, ...}` that
        json_each expands in C, keys as ids, so no task is parsed again to find its id. The
        reader leaves ids repeated within the load to this method: a row inserted by this load
        has a `seq` above the highest one before it, so the upsert below, on meeting such a
        row, sets its body to NULL, which the NOT NULL constraint refuses. The statement then
        fails, and only then is the batch searched for the line to name; an id inserted before
        this load is skipped and counted as already present, as in `send`. (An id that was
        already present before the load is skipped each time it appears, so a repeat of such
        an id is not reported.)
        """
        return self._load(batches, updating=False, rerun_completed=False)

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """`send_batches`, giving tasks already present the data of the batches (see the base
        class). A task's data is compared as the JSON text stored for it, so only a queue that
        held tasks before the load pays for the comparison, and only for the tasks it held."""
        return self._load(batches, updating=True, rerun_completed=rerun_completed)

    def _load(
        self, batches: Iterable[TaskBatch], *, updating: bool, rerun_completed: bool
    ) -> SendResult:
        t = self._table
        seen = inserted = 0
        changes = DataChanges()
        requeued = {DONE: 0, DEAD: 0}
        graph = DependencyGraph()
        held: set[str] = set()
        with self._write() as c:
            start = self._last_seq(c)
            upsert = f"ON CONFLICT(task_id) DO UPDATE SET body = NULL WHERE seq > {int(start)}"
            sql = f"INSERT INTO {t}(task_id, body) SELECT key, value FROM json_each(?) WHERE true "
            # A batch with tasks that wait inserts them held (state 4) in the same statement;
            # the second parameter lists their ids (SQLite makes it one lookup table, cheaper
            # than parsing each body for its "after").
            sql_held = (
                f"INSERT INTO {t}(task_id, body, state) SELECT key, value, "
                "CASE WHEN key IN (SELECT value FROM json_each(?2)) THEN 4 ELSE 0 END "
                "FROM json_each(?1) WHERE true "
            )
            for batch in batches:
                if updating and start:
                    self._update_changed(c, batch, int(start), rerun_completed, changes, requeued)
                waits = waiting_tasks(batch, graph)
                before = self._conn.total_changes
                try:
                    if waits:
                        held_ids = _json_text(list(waits))
                        c.execute(sql_held + upsert, (batch.json_object(), held_ids))
                    else:
                        c.execute(sql + upsert, (batch.json_object(),))
                except sqlite3.IntegrityError:
                    repeated = self._repeated_id(c, batch, int(start))
                    if repeated is None:
                        raise
                    raise repeated from None
                added = self._conn.total_changes - before
                inserted += added
                seen += len(batch)
                if waits:
                    every = added == len(batch)
                    held.update(
                        self._flows.hold(c, waits, int(start), all_new=every, inserted_held=True)
                    )
            still_held = self._flows.check_and_settle(c, graph, int(start), held)
            self._counters(
                c,
                inserted=inserted,
                waiting=inserted + changes.rerun - still_held,
                held=still_held,
                duplicates=seen - inserted,
                done=-requeued[DONE],
                dead=-requeued[DEAD],
            )
        return SendResult(
            inserted=inserted, already_present=seen - inserted, ids_seen=seen, changes=changes
        )

    # Completed tasks named in a load's changes, as examples.
    CHANGED_EXAMPLES = 5

    def _update_changed(
        self,
        c: sqlite3.Connection,
        batch: TaskBatch,
        start: int,
        rerun_completed: bool,
        changes: DataChanges,
        requeued: dict[int, int],
    ) -> None:
        """Give the tasks of `batch` that were present before this load (`seq <= start`) and
        whose stored JSON differs from the batch's the new data; `Queue.send_updates` says what
        becomes of each state."""
        t = self._table
        rows = c.execute(
            f"SELECT q.seq, q.state, q.task_id, j.value FROM json_each(?) AS j "
            f"JOIN {t} AS q ON q.task_id = j.key WHERE q.seq <= ? AND q.body != j.value",
            (batch.json_object(), start),
        ).fetchall()
        if not rows:
            return
        new_body, queue_again = [], []
        for seq, state, task_id, body in rows:
            if state in (WAITING, LEASED, HELD):  # a held task keeps waiting, with new data
                changes.updated += 1
                new_body.append((body, seq))
            elif rerun_completed:
                changes.rerun += 1
                requeued[state] += 1
                queue_again.append((body, seq))
            elif state == DEAD:
                changes.dead_updated += 1
                new_body.append((body, seq))
            else:
                changes.completed_changed += 1
                if len(changes.completed_examples) < self.CHANGED_EXAMPLES:
                    changes.completed_examples.append(task_id)
        c.executemany(f"UPDATE {t} SET body = ? WHERE seq = ?", new_body)
        c.executemany(
            f"UPDATE {t} SET body = ?, state = 0, visible_at = 0, attempts = 0, error = NULL "
            "WHERE seq = ?",
            queue_again,
        )

    def _repeated_id(
        self, c: sqlite3.Connection, batch: TaskBatch, start: int
    ) -> TaskFileError | None:
        """The error naming the first task of `batch` whose id this load has already seen."""
        in_batch: set[str] = set()
        query = f"SELECT 1 FROM {self._table} WHERE task_id = ? AND seq > ?"
        for index, task_id in enumerate(batch.ids):
            if task_id in in_batch or c.execute(query, (task_id, start)).fetchone():
                return TaskFileError(
                    f"{batch.where(index)}: duplicate id {task_id!r}; each task id must be "
                    "unique within a task file."
                )
            in_batch.add(task_id)
        return None

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        deadline = time.monotonic() + wait_seconds
        pause = 0.01
        while True:
            self._touch_consumer()
            received = self._receive_now(max_messages, lease_seconds)
            if received or received.dead_lettered or time.monotonic() >= deadline:
                return received
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)

    def _receive_now(self, max_messages: int, lease_seconds: float) -> Received:
        messages = Received()
        if max_messages <= 0:
            return messages
        t = self._table
        with self._write() as c:
            now = time.time()
            # Rows leased by this call; with a lease of 0 s they are still "visible at now",
            # and a second round (after dead-lettering) must not hand them out twice.
            taken: set[int] = set()
            # (task, receipt, attempt): made into messages once their dependencies' results
            # are known (a Message is frozen: making it twice cost a second construction).
            leased: list[tuple[Task, str, int]] = []
            while len(leased) < max_messages:
                wanted = max_messages - len(leased)
                rows = c.execute(
                    f"SELECT seq, body, state, attempts, lease FROM {t} "
                    "WHERE state < 2 AND visible_at <= ? ORDER BY visible_at LIMIT ?",
                    (now, wanted + len(taken)),
                ).fetchall()
                if taken:
                    rows = [row for row in rows if row[0] not in taken][:wanted]
                if not rows:
                    break
                lease_rows, dead_rows = [], []
                from_waiting = from_leased = dead_from_leased = 0
                for seq, body, state, attempts, lease in rows:
                    if state == LEASED and attempts >= self.max_attempts:
                        error = expired_lease_error(attempts, self.max_attempts)
                        dead_rows.append((error, seq))
                        messages.dead_lettered.append(
                            DeadLetter(Task.from_json(body), attempts, error)
                        )
                        dead_from_leased += 1
                        continue
                    if state == WAITING:
                        from_waiting += 1
                    else:
                        from_leased += 1
                    lease_rows.append(seq)
                    taken.add(seq)
                    leased.append((Task.from_json(body), f"{seq}:{lease + 1}", attempts + 1))
                if lease_rows:  # one statement for the batch, not one per row
                    c.execute(
                        f"UPDATE {t} SET state = 1, visible_at = ?, attempts = attempts + 1, "
                        "lease = lease + 1 WHERE seq IN (SELECT value FROM json_each(?))",
                        (now + lease_seconds, _json_text(lease_rows)),
                    )
                if dead_rows:
                    c.executemany(f"UPDATE {t} SET state = 3, error = ? WHERE seq = ?", dead_rows)
                self._counters(
                    c,
                    waiting=-from_waiting,
                    leased=from_waiting - dead_from_leased,
                    dead=dead_from_leased,
                )
                if not dead_rows:
                    break  # this round found all it wanted, or all there was
            found = self._flows.results_for(c, [task for task, _, _ in leased])
        messages.extend(
            Message(task, receipt, attempt, results)
            for (task, receipt, attempt), results in zip(leased, found, strict=True)
        )
        return messages

    @staticmethod
    def _receipt(message: Message) -> tuple[int, int]:
        seq, lease = message.receipt.split(":")
        return int(seq), int(lease)

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        """Mark tasks done. A completion is accepted even if the lease has since passed to
        another consumer: the work is done, and that consumer's own ack becomes a no-op."""
        if not messages:
            return
        self._touch_consumer()
        seqs = _json_text([self._receipt(m)[0] for m in messages])
        with self._write() as c:
            counts = {LEASED: 0, WAITING: 0}
            done: list[str] = []
            for state in (LEASED, WAITING):
                rows = self._changed_ids(
                    c,
                    "state = 2, error = NULL",
                    "state = ? AND seq IN (SELECT value FROM json_each(?))",
                    (state, seqs),
                )
                counts[state] = len(rows)
                done.extend(rows)
                if counts[LEASED] == len(messages):
                    break  # all were still leased, the usual case: no need to look further
            self._counters(
                c, leased=-counts[LEASED], waiting=-counts[WAITING], done=sum(counts.values())
            )
            self._counters(c, waiting=self._flows.complete(c, done, results, modern=MODERN_SQL))

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        seq, lease = self._receipt(message)
        t = self._table
        with self._write() as c:
            row = c.execute(
                f"SELECT attempts FROM {t} WHERE seq = ? AND state = 1 AND lease = ?", (seq, lease)
            ).fetchone()
            if row is None:
                return True  # the lease has passed on; the task is someone else's now
            if row[0] >= self.max_attempts:
                c.execute(f"UPDATE {t} SET state = 3, error = ? WHERE seq = ?", (error, seq))
                self._counters(c, leased=-1, dead=1)
                return False
            c.execute(
                f"UPDATE {t} SET state = 0, visible_at = ?, error = ? WHERE seq = ?",
                (time.time() + max(0.0, delay_seconds), error, seq),
            )
            self._counters(c, leased=-1, waiting=1)
            return True

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        seq, lease = self._receipt(message)
        with self._write() as c:
            cur = c.execute(
                f"UPDATE {self._table} SET state = 3, error = ? WHERE seq = ? AND state = 1 "
                "AND lease = ?",
                (error, seq, lease),
            )
            if cur.rowcount:
                self._counters(c, leased=-1, dead=1)

    def release(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        rows = [(seq, lease) for seq, lease in map(self._receipt, messages)]
        with self._write() as c:
            before = self._conn.total_changes
            c.executemany(
                f"UPDATE {self._table} SET state = 0, visible_at = 0, "
                "attempts = max(attempts - 1, 0) WHERE seq = ? AND state = 1 AND lease = ?",
                rows,
            )
            released = self._conn.total_changes - before
            self._counters(c, leased=-released, waiting=released)

    def release_all(self) -> int:
        """Give back every leased task at once, without counting the attempt.

        For recovering after a crash when no other consumer can be holding a lease (the local
        runner holds an exclusive lock on its state file): waiting for the leases to expire
        would only delay the resumed run.
        """
        with self._write() as c:
            cur = c.execute(
                f"UPDATE {self._table} SET state = 0, visible_at = 0, "
                "attempts = max(attempts - 1, 0) WHERE state = 1"
            )
            released = cur.rowcount
            self._counters(c, leased=-released, waiting=released)
        return released

    def leased_ids(self) -> list[str]:
        """Ids of the tasks currently leased (live or expired)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT task_id FROM {self._table} WHERE state = 1"
            ).fetchall()
        return [r[0] for r in rows]

    def ack_ids(self, ids: Iterable[str], results: Mapping[str, Any] | None = None) -> int:
        """Mark leased or waiting tasks done by id (for resume: their outcome was recorded)."""
        payload = _json_text(list(ids))
        with self._write() as c:
            counts = {}
            done: list[str] = []
            for state in (LEASED, WAITING):
                rows = self._changed_ids(
                    c,
                    "state = 2",
                    "state = ? AND task_id IN (SELECT value FROM json_each(?))",
                    (state, payload),
                )
                counts[state] = len(rows)
                done.extend(rows)
            self._counters(
                c, leased=-counts[LEASED], waiting=-counts[WAITING], done=sum(counts.values())
            )
            self._counters(c, waiting=self._flows.complete(c, done, results, modern=MODERN_SQL))
        return sum(counts.values())

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        if not messages:
            return
        self._touch_consumer()
        until = time.time() + lease_seconds
        rows = [(until, seq, lease) for seq, lease in map(self._receipt, messages)]
        with self._write() as c:
            c.executemany(
                f"UPDATE {self._table} SET visible_at = ? WHERE seq = ? AND state = 1 "
                "AND lease = ?",
                rows,
            )

    def stats(self) -> QueueStats:
        with self._lock:
            c = self._conn
            row = c.execute(
                "SELECT inserted, duplicates, waiting, leased, done, dead, held "
                "FROM taskfleet_queues WHERE name = ?",
                (self.name,),
            ).fetchone()
            inserted, duplicates, waiting, leased, done, dead, held = row
            future = dict(
                c.execute(
                    f"SELECT state, count(*) FROM {self._table} WHERE state < 2 AND "
                    "visible_at > ? GROUP BY state",
                    (time.time(),),
                ).fetchall()
            )
            blocked = len(self._flows.dependents_of(c, None)) if held and dead else 0
        delayed = future.get(WAITING, 0)
        live_leases = future.get(LEASED, 0)
        return QueueStats(
            visible=(waiting - delayed) + (leased - live_leases),
            leased=live_leases,
            delayed=delayed,
            dead=dead,
            inserted=inserted,
            completed=done,
            duplicates_skipped=duplicates,
            waiting=held,
            blocked=blocked,
        )

    def dependents(self, task_ids: Iterable[str]) -> list[str]:
        ids = list(task_ids)
        with self._lock:
            if not ids:
                return []
            found = self._flows.dependents_of(self._conn, ids)
        roots = set(ids)
        return [task_id for task_id in found if task_id not in roots]

    def dead_letters(self) -> Iterator[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT body, attempts, error FROM {self._table} WHERE state = 3 ORDER BY seq"
            ).fetchall()
        for body, attempts, error in rows:
            yield DeadLetter(Task.from_json(body), attempts, error)

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        t = self._table
        with self._write() as c:
            if ids is None:
                cur = c.execute(
                    f"UPDATE {t} SET state = 0, visible_at = 0, attempts = 0 WHERE state = 3"
                )
            else:
                cur = c.execute(
                    f"UPDATE {t} SET state = 0, visible_at = 0, attempts = 0 WHERE state = 3 "
                    "AND task_id IN (SELECT value FROM json_each(?))",
                    (_json_text(list(ids)),),
                )
            moved = cur.rowcount
            self._counters(c, dead=-moved, waiting=moved)
        return moved

    def purge(self) -> None:
        with self._write() as c:
            c.execute(f"DELETE FROM {self._table}")
            self._flows.purge(c)
            c.execute(
                "UPDATE taskfleet_queues SET inserted = 0, duplicates = 0, waiting = 0, "
                "leased = 0, done = 0, dead = 0, held = 0 WHERE name = ?",
                (self.name,),
            )

    def set_consumer(self, name: str) -> None:
        """A row of `taskfleet_consumers` is this consumer's sign of life."""
        with self._write() as c:
            c.execute(_CONSUMERS_TABLE)
        self._consumer = name
        self._consumer_touched = 0.0
        self._touch_consumer()

    def _touch_consumer(self) -> None:
        """The consumer's row says now, at most once a second (one small write transaction;
        a receive, renewal or ack touches it)."""
        if self._consumer is None:
            return
        now = time.monotonic()
        if now - self._consumer_touched < CONSUMER_TOUCH_SECONDS:
            return
        self._consumer_touched = now
        with self._write() as c:
            c.execute(
                "INSERT INTO taskfleet_consumers(queue, name, seen) VALUES (?, ?, ?) "
                "ON CONFLICT(queue, name) DO UPDATE SET seen = excluded.seen",
                (self.name, self._consumer, time.time()),
            )

    def consumer_activity(self) -> dict[str, float]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT name, seen FROM taskfleet_consumers WHERE queue = ?", (self.name,)
                ).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # no consumer was ever named
                    return {}
                away = _unavailable(self, exc)
                if away is None:
                    raise
                raise away from None
        return {str(name): float(seen) for name, seen in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


#: Named consumers (pool machines) and when each last received, renewed or acknowledged.
_CONSUMERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS taskfleet_consumers (queue TEXT NOT NULL, name TEXT NOT NULL, "
    "seen REAL NOT NULL, PRIMARY KEY (queue, name))"
)
CONSUMER_TOUCH_SECONDS = 1.0


# What SQLite says when the file is busy or the disk fails for now (a full disk, an I/O error).
_AWAY_WORDS = ("locked", "busy", "disk I/O error", "database or disk is full")


def _unavailable(queue: SQLiteQueue, exc: sqlite3.Error) -> QueueUnavailableError | None:
    """The error as `QueueUnavailableError` when it may pass (see `_AWAY_WORDS`), else None."""
    if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in _AWAY_WORDS):
        return QueueUnavailableError(str(queue.path), str(exc))
    return None


class _WriteTransaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, retried while another process holds the write lock.

    It is the one place the queue writes its file, so it is where an error that may pass (the
    file stayed locked past the busy timeout and the retries, a full disk, an I/O error)
    becomes `QueueUnavailableError`, once the transaction is rolled back.
    """

    def __init__(self, queue: SQLiteQueue) -> None:
        self._queue = queue

    def __enter__(self) -> sqlite3.Connection:
        q = self._queue
        q._lock.acquire()
        conn = q._conn
        for attempt in range(_BUSY_RETRIES):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    q._lock.release()
                    away = _unavailable(q, exc)  # a failing disk
                    if away is None:
                        raise
                    raise away from None
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        q._lock.release()
        raise QueueUnavailableError(str(q.path), "the file stayed locked by another process")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn = self._queue._conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as failed:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    away = _unavailable(self._queue, failed)
                    if away is None:
                        raise
                    raise away from None
            else:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                away = _unavailable(self._queue, exc) if isinstance(exc, sqlite3.Error) else None
                if away is not None:
                    raise away from None
        finally:
            self._queue._lock.release()


def _batch_json(chunk: list[Task]) -> str:
    """The tasks as one JSON array of {"id", "data"} objects ("after" too, for a task that
    waits for others).

    Plain dicts, because orjson serialises them about three times faster than the Task
    dataclass itself. Text, not bytes: SQLite 3.45 and later read a BLOB given to json_each
    as binary JSONB.
    """
    try:
        return orjson.dumps(
            [
                {"id": task.id, "data": task.data, "after": task.after}
                if task.after
                else {"id": task.id, "data": task.data}
                for task in chunk
            ]
        ).decode()
    except orjson.JSONEncodeError:
        for task in chunk:
            try:
                task.to_json()
            except orjson.JSONEncodeError as exc:
                raise TaskfleetError(
                    f"task {task.id!r}: its data cannot be stored as JSON ({exc})"
                ) from None
        raise


def _queue_files(path: Path) -> list[str]:
    """The names of the SQLite files beside `path`, for a `QueueNotFoundError`."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        return [
            p.name
            for p in folder.iterdir()
            if p.suffix in SQLiteQueue.bare_path_suffixes and p.is_file()
        ]
    except OSError:  # the folder is missing or unreadable: nothing to suggest
        return []
