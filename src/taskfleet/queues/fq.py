"""The shared-filesystem queue: `fq:///path/to/dir`, a queue that is only a directory.

For clusters that share a filesystem (NFS, Lustre, GPFS, a cluster's home directory) but run no
queue service. No server and no lock: every change is one atomic `rename` of one file, so any
number of workers on any number of hosts of that filesystem may share the queue. (A SQLite file
must not be shared over NFS: its locks are not reliable there. This backend is what to use.)

The directory holds one file per task, in the subdirectory of its state; a file's name carries
what the state needs, so a listing is enough to count or choose, and its content is the task's
JSON body, written once and never changed (until the task is done, when it is emptied). The
file has a second name, ids/ID, from its insert on:

    queue.json                 max_attempts, written once when the queue is created
    queued/SEQ.ATTEMPTS.ID     visible now (SEQ: insertion time, so a listing is in order)
    leased/TOKEN.ATTEMPT.ID    leased; the file's mtime is when the lease expires
    delayed/DUE.ATTEMPTS.ID    a retry waiting for its time (DUE in the name)
    dead/WHEN.ATTEMPTS.ID      dead letters; their last error in errors/ID
    ids/ID                     every id ever inserted (until a purge): the task's file again
    done/ID                    the tasks acknowledged: their file, emptied
    counts/TOKEN.N             N ids a send skipped as already present
    consumers/NAME             a named consumer (a pool machine): its mtime is when it last
                               received, renewed or acknowledged (at most once a second)

- Insert: the task is written as ids/ID, created with O_EXCL (an id already present is
  skipped and counted), then hard-linked into queued/ once whole, so a reader never sees a
  partial file: two file operations per task. (A process killed between the two leaves the id
  claimed and the task not queued: loading it again skips it.)
- Lease: set the file's mtime to the lease's expiry, then rename it from queued/ to leased/
  under a fresh random TOKEN. Of many hosts renaming the same file one succeeds; the others get
  "no such file" and try the next. The receipt is the leased name, so a delivery whose lease
  passed on to another consumer holds a name that no longer exists: its retry, release,
  extend and dead letter change nothing. Extend sets the mtime again.
- An expired lease (mtime in the past) is taken back the same way, renamed to a new TOKEN with
  the next attempt, or to dead/ when it was the task's last attempt (reported by `receive`).
- Ack renames the leased file to done/ID and empties it. A late ack whose lease passed on
  completes the task wherever it is leased or delayed now (the work is done).
- Small files that are not tasks (errors, queue.json) are written under a hidden name
  (`.NAME.tmp`, which every listing skips) and renamed within their directory.

Assumptions, which the docs repeat: `rename` within one filesystem is atomic and fails with
"no such file" for all but one of several hosts renaming the same source (POSIX, NFSv3 and v4,
Lustre, GPFS); exclusive create (O_EXCL) and hard links are atomic (NFSv3 and later); the
hosts' clocks agree to well within a lease (NTP), since a lease's expiry is one host's clock
read by another; and a host sees another's change of a file's mtime within a small part of a
lease (NFS attribute caches: keep leases well above `actimeo`). A skewed clock or a stale cache
can only make a lease look expired early, which delivers the task twice: delivery is at least
once, and the runtime renews leases long before they end. Purge and release-all are for when
no worker runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import unquote

import orjson

from taskfleet._compat import StrEnum
from taskfleet.errors import QueueUnavailableError, QueueURLError, TaskfleetError, path_error
from taskfleet.queues.base import (
    DataChanges,
    DeadLetter,
    Message,
    Queue,
    QueueAddress,
    QueueNotFoundError,
    QueueStats,
    Received,
    SendInterrupted,
    SendResult,
    attempts_for_new_queue,
    expired_lease_error,
    queue_not_found,
    tasks_of,
)
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.tasks.model import as_tasks, task_id_problem

if TYPE_CHECKING:
    from taskfleet.tasks.batches import TaskBatch

META_FILE = "queue.json"
_NS = 1_000_000_000
#: How often `receive` looks for expired leases and due retries while queued tasks remain
#: (always when none remain): at least this often, or a tenth of the lease if that is longer.
_SCAN_EVERY_SECONDS = 1.0
#: Consecutive files taken by others before the cached listing of queued/ is read again.
_MISSES_BEFORE_RELIST = 32
#: How many times one receive may read queued/ (its listing used up by other consumers).
_LISTINGS_PER_RECEIVE = 3
#: Threads that write a send's files, and tasks per chunk handed to one.
SEND_THREADS, SEND_CHUNK = 8, 64
#: Where named consumers leave their sign of life, and how often at most they renew it.
CONSUMERS_DIR = "consumers"
CONSUMER_TOUCH_SECONDS = 1.0
_NOT_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9_.-]")
#: The pause between looks at an empty queue while `receive` waits, first and longest.
_FIRST_PAUSE, _LONGEST_PAUSE = 0.02, 0.5


class State(StrEnum):
    """A task's state, which is the subdirectory its file is in."""

    QUEUED = "queued"
    LEASED = "leased"
    DELAYED = "delayed"
    DEAD = "dead"


class _Marks(StrEnum):
    """Subdirectories that are not task states: markers, counters and files being written."""

    IDS = "ids"
    DONE = "done"
    ERRORS = "errors"
    COUNTS = "counts"


class _Name(NamedTuple):
    """A task file's name: KEY.ATTEMPTS.ID (KEY: a sequence, token or time, per state)."""

    key: str
    attempts: int
    task_id: str

    def __str__(self) -> str:
        return f"{self.key}.{self.attempts}.{self.task_id}"


def _parse(name: str) -> _Name | None:
    """The parts of a task file's name; None for a file that is not ours (an NFS `.nfs*`)."""
    if name.startswith("."):
        return None
    key, _, rest = name.partition(".")
    attempts, _, task_id = rest.partition(".")
    if not task_id or not attempts.isdigit():
        return None
    return _Name(key, int(attempts), task_id)


def _hex_time(ns: int) -> str:
    return f"{ns:016x}"


class _Dir(str):
    """A directory's path as text: `directory / name` is the text of the path inside it.

    Plain strings rather than `pathlib.Path`, whose objects cost more than the system calls
    they name on a fast filesystem, in the loops that touch a file per task."""

    def __truediv__(self, name: str) -> str:
        return f"{self}/{name}"


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _names(directory: str) -> list[str]:
    """The names of a directory's entries, without hidden files."""
    return [name for name in os.listdir(directory) if not name.startswith(".")]


def _create_empty(path: str) -> bool:
    """Create an empty file if none is there; False if one was."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _rename(source: str, target: str) -> bool:
    """Move one file; False if another consumer moved it first."""
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return False
    return True


#: What a filesystem answers while it is away for now (an NFS server restarting or out of
#: reach on a soft mount, a full disk or quota): the same call may well succeed later.
_AWAY_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EAGAIN,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
    }
)


def is_unavailable(exc: BaseException) -> bool:
    """The filesystem is away for now, rather than refusing us (a permission, a bad path)."""
    return isinstance(exc, OSError) and exc.errno in _AWAY_ERRNOS


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _touches_files(method: _Method) -> _Method:
    """Around a protocol method: a filesystem that is away becomes `QueueUnavailableError`
    (which a worker rides out), naming the queue's directory; other errors pass unchanged."""

    @functools.wraps(method)
    def call(self: FileQueue, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if is_unavailable(exc):
                raise self.away(exc) from None
            raise

    return call  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Layout:
    """The paths of one queue directory."""

    root: _Dir

    def state(self, state: State) -> _Dir:
        return _Dir(self.root / state.value)

    def mark(self, mark: _Marks) -> _Dir:
        return _Dir(self.root / mark.value)

    @property
    def meta(self) -> str:
        return self.root / META_FILE

    def all_subdirectories(self) -> list[_Dir]:
        return [_Dir(self.root / s.value) for s in (*State, *_Marks)]


class FileQueue(Queue):
    """A queue in a directory of a shared filesystem; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("fq",)
    example_url: ClassVar[str] = "fq:///path/to/queue-dir"
    name_in_query: ClassVar[bool] = False
    exact_counts: ClassVar[bool] = True
    idempotent_send: ClassVar[bool] = True
    lists_leases: ClassVar[bool] = True
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    updates_data: ClassVar[bool] = True
    reports_consumer_activity: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_attempts: int | None = None,
        url: str | None = None,
        create: bool = True,
    ) -> None:
        attempts = attempts_for_new_queue(max_attempts)
        self.path = Path(path).expanduser()
        self.name = str(path)
        self.url = url or f"fq://{self.path}"
        self._dirs = _Layout(_Dir(self.path))
        self._lock = threading.Lock()
        self._queued: deque[str] = deque()  # a listing of queued/, taken from the left
        self._last_scan = 0.0
        self._tmp_prefix = f"{os.getpid()}.{secrets.token_hex(6)}."
        self._tmp_count = itertools.count(1)  # next() is atomic: the send threads share it
        self._consumer: str | None = None  # consumers/NAME, once `set_consumer` named it
        self._consumer_touched = 0.0
        try:
            if not os.path.exists(self._dirs.meta):
                if not create:
                    raise _not_found(self.path)
                self._create(attempts)
            self.max_attempts = self._read_max_attempts()
        except OSError as exc:
            raise path_error(
                self.path, exc, "queue", "the directory must be readable and writable"
            ) from None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def parse_url(cls, url: str) -> QueueAddress:
        """`fq:///abs/dir` (absolute), `fq://rel/dir` or `fq://~/dir`: the URL after `fq://`
        is the queue's directory, whose last part follows the queue name rules."""
        address = super().parse_url(url)
        return QueueAddress(
            address.url, address.parts, unquote(address.name), address.max_attempts, {}
        )

    @classmethod
    def check_name(cls, name: str, url: str) -> None:
        directory = unquote(name)
        if not directory.strip("/"):
            raise QueueURLError(f"{redact(url)!r}: the fq:// queue URL names no directory")
        super().check_name(directory.rstrip("/").rsplit("/", 1)[-1], url)

    @classmethod
    def url_for(cls, address: QueueAddress, name: str) -> str:
        return f"fq://{name}"

    @classmethod
    def event_queue_name(cls, name: str) -> str:
        return f"{name.rstrip('/')}-events"

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> FileQueue:
        return cls(address.name, max_attempts=max_attempts, url=address.url, create=create)

    def _create(self, max_attempts: int) -> None:
        """Make the directories and write queue.json once: of hosts creating the same queue
        at once, the first link wins and every one reads its max_attempts."""
        for directory in self._dirs.all_subdirectories():
            os.makedirs(directory, exist_ok=True)
        tmp = self._tmp_path(self._dirs.root)
        with open(tmp, "wb") as file:
            file.write(orjson.dumps({"max_attempts": max_attempts, "created": time.time()}))
        try:
            os.link(tmp, self._dirs.meta)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)

    def _read_max_attempts(self) -> int:
        try:
            return int(orjson.loads(_read(self._dirs.meta))["max_attempts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TaskfleetError(
                f"{self._dirs.meta}: not a taskfleet fq:// queue description (max_attempts)"
            ) from None

    def _tmp_path(self, directory: _Dir) -> str:
        """A hidden name, unique to this writer, in `directory`."""
        return directory / f".{self._tmp_prefix}{next(self._tmp_count)}.tmp"

    # -- moving files -----------------------------------------------------------------------

    def _write_into(self, directory: _Dir, name: str, body: bytes) -> None:
        """Write a file under a hidden name beside `target` and rename it to `target`, so that
        nobody reads it half done."""
        tmp = self._tmp_path(directory)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, body)
        finally:
            os.close(fd)
        os.rename(tmp, directory / name)

    def _lease(self, source: str, name: _Name, expiry_ns: int) -> Message | None:
        """Take the file at `source` with a lease until `expiry_ns`, counting one attempt;
        None if another consumer took it first."""
        leased = _Name(secrets.token_hex(8), name.attempts + 1, name.task_id)
        target = self._dirs.state(State.LEASED) / str(leased)
        try:
            # The expiry is set before the rename, so that the file never sits in leased/
            # looking expired; and again after, in case a consumer that lost the race set its own.
            os.utime(source, ns=(expiry_ns, expiry_ns))
            os.rename(source, target)
            os.utime(target, ns=(expiry_ns, expiry_ns))
            body = _read(target)
        except FileNotFoundError:
            return None
        task = Task.from_json(body)
        return Message(task, str(leased), leased.attempts, task.dependency_results)

    def _bury(self, source: str, name: _Name, error: str | None) -> bool:
        """Move a task to the dead letters with its error; False if it was not at `source`."""
        dead = _Name(_hex_time(time.time_ns()), name.attempts, name.task_id)
        if not _rename(source, self._dirs.state(State.DEAD) / str(dead)):
            return False
        errors = self._dirs.mark(_Marks.ERRORS)
        if error is None:
            _unlink(errors / name.task_id)
        else:
            self._write_into(errors, name.task_id, error.encode("utf-8"))
        return True

    def _requeue(self, source: str, name: _Name, attempts: int, first: bool = False) -> bool:
        """Make a task visible now (`first`: before everything queued, as a release does)."""
        key = _hex_time(0 if first else time.time_ns())
        queued = str(_Name(key, attempts, name.task_id))
        if not _rename(source, self._dirs.state(State.QUEUED) / queued):
            return False
        with self._lock:
            if first:
                self._queued.appendleft(queued)
            else:
                self._queued.append(queued)
        return True

    # -- receive ----------------------------------------------------------------------------

    def _next_queued(self, listings: int) -> tuple[str | None, int]:
        """The next name from the cached listing of queued/, reading the directory again when
        the listing is used up, at most `_LISTINGS_PER_RECEIVE` times per receive (`listings`
        counts this receive's) and not after a listing found nothing."""
        with self._lock:
            if not self._queued and 0 <= listings < _LISTINGS_PER_RECEIVE:
                self._queued = deque(sorted(_names(self._dirs.state(State.QUEUED))))
                listings = listings + 1 if self._queued else -1
            return (self._queued.popleft() if self._queued else None), listings

    def _lease_queued(self, received: Received, want: int, expiry_ns: int) -> None:
        queued = self._dirs.state(State.QUEUED)
        listings = 0
        misses = 0
        while len(received) < want:
            name_text, listings = self._next_queued(listings)
            if name_text is None:
                return
            name = _parse(name_text)
            message = None if name is None else self._lease(queued / name_text, name, expiry_ns)
            if message is not None:
                received.append(message)
                misses = 0
                continue
            misses += 1
            with self._lock:
                if misses >= _MISSES_BEFORE_RELIST:
                    self._queued.clear()  # others took these: read the directory again
                    misses = 0
                elif self._queued:
                    # Another consumer leases from here (in the same order: it listed the same
                    # names): go on from a random place of the listing instead, so that the
                    # consumers work on different files rather than race for the same ones. A
                    # consumer alone never misses, and so leases in the order of insertion.
                    self._queued.rotate(-random.randrange(len(self._queued)))

    def _scan(self, received: Received, want: int, now_ns: int, expiry_ns: int) -> None:
        """Take back expired leases (dead-lettering those on their last attempt) and make
        retries that are due visible."""
        self._last_scan = time.monotonic()
        leased = self._dirs.state(State.LEASED)
        with os.scandir(leased) as entries:
            for entry in entries:
                if len(received) >= want:
                    break
                name = _parse(entry.name)
                if name is None:
                    continue
                try:
                    if entry.stat().st_mtime_ns > now_ns:
                        continue
                except FileNotFoundError:
                    continue
                if name.attempts >= self.max_attempts:
                    letter = self._bury_expired(entry.path, name)
                    if letter is not None:
                        received.dead_lettered.append(letter)
                    continue
                message = self._lease(entry.path, name, expiry_ns)
                if message is not None:
                    received.append(message)
        delayed = self._dirs.state(State.DELAYED)
        for name_text in _names(delayed):
            name = _parse(name_text)
            if name is not None and int(name.key, 16) <= now_ns:
                self._requeue(delayed / name_text, name, name.attempts)

    def _bury_expired(self, source: str, name: _Name) -> DeadLetter | None:
        """Dead-letter a task whose lease expired on its last attempt; None if another
        consumer did first."""
        error = expired_lease_error(name.attempts, self.max_attempts)
        try:
            task = Task.from_json(_read(source))  # a task file never changes
        except FileNotFoundError:
            return None
        if not self._bury(source, name, error):
            return None
        return DeadLetter(task, name.attempts, error)

    def _receive_now(self, max_messages: int, lease_seconds: float) -> Received:
        now_ns = time.time_ns()
        expiry_ns = now_ns + int(lease_seconds * _NS)
        received = Received()
        every = max(_SCAN_EVERY_SECONDS, lease_seconds / 10)
        scanned = time.monotonic() - self._last_scan >= every
        if scanned:
            self._scan(received, max_messages, now_ns, expiry_ns)
        self._lease_queued(received, max_messages, expiry_ns)
        if len(received) < max_messages and not scanned:
            self._scan(received, max_messages, now_ns, expiry_ns)
            self._lease_queued(received, max_messages, expiry_ns)
        return received

    # -- the protocol ---------------------------------------------------------------------

    def send(self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = 0) -> SendResult:
        """Insert tasks one file each, read from the iterable a chunk at a time and written by
        a few threads at once (each file is a few round trips to a network filesystem, which
        threads overlap; at most a few chunks are in flight, so memory stays bounded). Not one
        transaction: a failure part way raises `SendInterrupted` with the count inserted."""
        tasks = as_tasks(tasks)  # plain dicts too
        size = max(1, batch_size or SEND_CHUNK)
        result = SendResult()
        in_flight: deque[Future[_ChunkResult]] = deque()
        error: BaseException | None = None
        with ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="taskfleet-fq-send") as pool:
            try:
                iterator = iter(tasks)
                while chunk := list(islice(iterator, size)):
                    result.ids_seen += len(chunk)
                    good, problem = _checked_ids(chunk)
                    if good:
                        in_flight.append(pool.submit(self._insert_chunk, good))
                    if problem is not None:
                        raise problem
                    while len(in_flight) > 2 * SEND_THREADS:
                        failed = _collect(in_flight.popleft(), result)
                        if failed is not None:
                            raise failed
            except Exception as exc:
                error = exc
            while in_flight:  # every chunk handed out is counted, whatever stopped the send
                failed = _collect(in_flight.popleft(), result)
                error = error or failed
        self._count_duplicates(result.already_present)
        if error is not None:
            raise SendInterrupted(result.inserted, error, result.already_present) from error
        return result

    def _insert_chunk(self, chunk: list[Task]) -> _ChunkResult:
        """Insert tasks whose ids are checked: write the task as ids/ID, created only if no
        file has that name (O_EXCL: the id is claimed once), then link it into queued/."""
        ids = self._dirs.mark(_Marks.IDS)
        queued = self._dirs.state(State.QUEUED)
        done = _ChunkResult()
        try:
            for task in chunk:
                claim = ids / task.id
                try:
                    fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    done.already_present += 1
                    continue
                try:
                    _write_all(fd, task.to_json())
                finally:
                    os.close(fd)
                os.link(claim, queued / str(_Name(_hex_time(time.time_ns()), 0, task.id)))
                done.inserted += 1
        except Exception as exc:  # reported with the counts of what went in
            done.error = self.away(exc) if is_unavailable(exc) else exc
        return done

    @_touches_files
    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """`send_batches`, and tasks already present take the batches' data (see the base
        class), a chunk at a time; like `send`, not one transaction (`SendInterrupted`).

        A task's data is read from ids/ID, its file's second name. A changed task gets a new
        file written under a hidden name and renamed over its file where it is now (queued,
        delayed, leased or dead, same name, a lease's mtime kept), then linked as ids/ID. A
        rename replaces atomically, so a worker reads the old file or the new one, never a mix,
        and nothing is ever lost; a worker that leases the task in the moment between finding
        its file and replacing it runs the old data and leaves the new copy queued, so the
        task runs twice (fq:// delivers at least once). A completed task's file was emptied:
        it is counted as `completed_unknown` and left alone.
        """
        result = SendResult()
        where: dict[str, tuple[State, str]] | None = None
        try:
            iterator = tasks_of(batches)
            while chunk := list(islice(iterator, SEND_CHUNK)):
                result.ids_seen += len(chunk)
                good, problem = _checked_ids(chunk)
                new, present = self._split_present(good)
                done = self._insert_chunk(new)
                result.inserted += done.inserted
                result.already_present += done.already_present + len(present)
                if done.error is not None:
                    raise done.error
                for task in present:
                    if where is None:
                        where = self._task_files()
                    self._update_one(task, where, rerun_completed, result.changes)
                if problem is not None:
                    raise problem
        except BaseException as exc:
            self._count_duplicates(result.already_present)
            cause = self.away(exc) if isinstance(exc, OSError) and is_unavailable(exc) else exc
            raise SendInterrupted(result.inserted, cause, result.already_present) from exc
        self._count_duplicates(result.already_present)
        return result

    def _split_present(self, tasks: list[Task]) -> tuple[list[Task], list[Task]]:
        """The tasks whose ids were never inserted, and those already present."""
        ids = self._dirs.mark(_Marks.IDS)
        new, present = [], []
        for task in tasks:
            (present if os.path.lexists(ids / task.id) else new).append(task)
        return new, present

    def _task_files(self) -> dict[str, tuple[State, str]]:
        """Where each task not done is now: its state and its file's name."""
        where: dict[str, tuple[State, str]] = {}
        for state in (State.DEAD, State.DELAYED, State.QUEUED, State.LEASED):
            for name_text in _names(self._dirs.state(state)):
                name = _parse(name_text)
                if name is not None:
                    where[name.task_id] = (state, name_text)
        return where

    def _update_one(
        self,
        task: Task,
        where: dict[str, tuple[State, str]],
        rerun: bool,
        changes: DataChanges,
    ) -> None:
        """Give one task already present the data of `task` if its own differs."""
        if os.path.lexists(self._dirs.mark(_Marks.DONE) / task.id):
            changes.completed_unknown += 1
            return
        try:
            current = _read(self._dirs.mark(_Marks.IDS) / task.id)
        except FileNotFoundError:
            current = b""
        if current and Task.from_json(current) == task:
            return
        body = task.to_json()
        for _ in range(2):  # its file may have moved since the listing: list again, once
            found = where.get(task.id)
            if found is not None and self._replace(found, task.id, body):
                break
            where.clear()
            where.update(self._task_files())
        else:
            changes.completed_unknown += 1  # completed meanwhile (or never queued)
            return
        state, name_text = where[task.id]
        if state is not State.DEAD:
            changes.updated += 1
        elif rerun:
            name = _parse(name_text)
            if name is not None and self._requeue(self._dirs.state(state) / name_text, name, 0):
                _unlink(self._dirs.mark(_Marks.ERRORS) / task.id)
            changes.rerun += 1
        else:
            changes.dead_updated += 1

    def _replace(self, found: tuple[State, str], task_id: str, body: bytes) -> bool:
        """Put a file with `body` in place of the task's file at `found`, and link it as
        ids/ID; False if the file is not there any more."""
        state, name_text = found
        directory = self._dirs.state(state)
        target = directory / name_text
        try:
            times = os.stat(target)
        except FileNotFoundError:
            return False
        tmp = self._tmp_path(directory)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, body)
        finally:
            os.close(fd)
        os.utime(tmp, ns=(times.st_atime_ns, times.st_mtime_ns))  # a lease's expiry
        os.rename(tmp, target)
        ids = self._dirs.mark(_Marks.IDS)
        link = self._tmp_path(ids)
        try:
            os.link(target, link)
        except FileNotFoundError:  # taken on meanwhile: ids/ID gets a copy of its own
            self._write_into(ids, task_id, body)
        else:
            os.rename(link, ids / task_id)
        return True

    def _count_duplicates(self, count: int) -> None:
        if count:
            _create_empty(self._dirs.mark(_Marks.COUNTS) / f"{secrets.token_hex(8)}.{count}")

    @_touches_files
    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        if max_messages <= 0:
            return Received()
        deadline = time.monotonic() + max(0.0, wait_seconds)
        pause = _FIRST_PAUSE
        while True:
            self._touch_consumer()
            received = self._receive_now(max_messages, lease_seconds)
            left = deadline - time.monotonic()
            if received or received.dead_lettered or left <= 0:
                return received
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LONGEST_PAUSE)

    @_touches_files
    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        self._touch_consumer()
        leased = self._dirs.state(State.LEASED)
        late = {m.task_id for m in messages if not self._complete(leased / m.receipt, m.task_id)}
        if late:
            self._complete_ids(late, (State.LEASED, State.DELAYED))

    def _complete(self, source: str, task_id: str) -> bool:
        """Move a task's file to done/ and empty it (its id stays claimed in ids/, the same
        file); False if it was not at `source`."""
        done = self._dirs.mark(_Marks.DONE) / task_id
        if not _rename(source, done):
            return False
        os.truncate(done, 0)
        return True

    def _complete_ids(self, ids: set[str], states: Iterable[State]) -> int:
        """Complete the tasks of these ids found in these states; how many."""
        completed = 0
        for state in states:
            directory = self._dirs.state(state)
            for name_text in _names(directory):
                name = _parse(name_text)
                if name is None or name.task_id not in ids:
                    continue
                if self._complete(directory / name_text, name.task_id):
                    ids.discard(name.task_id)
                    completed += 1
        return completed

    @_touches_files
    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        source = self._dirs.state(State.LEASED) / message.receipt
        name = _parse(message.receipt)
        if name is None:
            return True
        if name.attempts >= self.max_attempts:
            return not self._bury(source, name, error)
        if delay_seconds <= 0:
            self._requeue(source, name, name.attempts)
            return True
        due = _hex_time(time.time_ns() + int(delay_seconds * _NS))
        _rename(
            source, self._dirs.state(State.DELAYED) / str(_Name(due, name.attempts, name.task_id))
        )
        return True

    @_touches_files
    def dead_letter(self, message: Message, error: str | None = None) -> None:
        name = _parse(message.receipt)
        if name is not None:
            self._bury(self._dirs.state(State.LEASED) / message.receipt, name, error)

    @_touches_files
    def release(self, messages: Sequence[Message]) -> None:
        leased = self._dirs.state(State.LEASED)
        for message in reversed(messages):  # each to the head: they keep their order
            name = _parse(message.receipt)
            if name is not None:
                self._requeue(leased / message.receipt, name, max(0, name.attempts - 1), first=True)

    @_touches_files
    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        self._touch_consumer()
        expiry_ns = time.time_ns() + int(lease_seconds * _NS)
        leased = self._dirs.state(State.LEASED)
        for message in messages:
            # A lease that passed on is someone else's now: nothing to renew.
            with contextlib.suppress(FileNotFoundError):
                os.utime(leased / message.receipt, ns=(expiry_ns, expiry_ns))

    @_touches_files
    def set_consumer(self, name: str) -> None:
        """consumers/NAME is this consumer's sign of life (NAME made a plain file name)."""
        directory = self.path / CONSUMERS_DIR
        directory.mkdir(exist_ok=True)
        safe = _NOT_IN_FILE_NAMES.sub("_", name).lstrip(".") or "_"
        self._consumer = str(directory / safe)
        self._consumer_touched = 0.0
        self._touch_consumer()

    def _touch_consumer(self) -> None:
        """Set the consumer's file's mtime to now, at most once a second (one metadata
        operation; the file is created the first time)."""
        if self._consumer is None:
            return
        now = time.monotonic()
        if now - self._consumer_touched < CONSUMER_TOUCH_SECONDS:
            return
        self._consumer_touched = now
        try:
            os.utime(self._consumer)
        except FileNotFoundError:  # a purge, or the first time
            _create_empty(self._consumer)

    @_touches_files
    def consumer_activity(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        try:
            entries = list(os.scandir(self.path / CONSUMERS_DIR))
        except FileNotFoundError:  # no consumer was ever named
            return seen
        for entry in entries:
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                seen[entry.name] = entry.stat().st_mtime
        return seen

    @_touches_files
    def stats(self) -> QueueStats:
        now_ns = time.time_ns()
        visible = len(_names(self._dirs.state(State.QUEUED)))
        leased = delayed = 0
        for entry in os.scandir(self._dirs.state(State.LEASED)):
            try:
                live = entry.stat().st_mtime_ns > now_ns
            except FileNotFoundError:
                continue
            leased += live
            visible += not live  # an expired lease is visible again
        for name_text in _names(self._dirs.state(State.DELAYED)):
            name = _parse(name_text)
            if name is not None:
                due = int(name.key, 16) > now_ns
                delayed += due
                visible += not due
        duplicates = sum(int(n.rsplit(".", 1)[-1]) for n in _names(self._dirs.mark(_Marks.COUNTS)))
        return QueueStats(
            visible=visible,
            leased=leased,
            delayed=delayed,
            dead=len(_names(self._dirs.state(State.DEAD))),
            inserted=len(_names(self._dirs.mark(_Marks.IDS))),
            completed=len(_names(self._dirs.mark(_Marks.DONE))),
            duplicates_skipped=duplicates,
        )

    def dead_letters(self) -> Iterator[DeadLetter]:
        dead = self._dirs.state(State.DEAD)
        errors = self._dirs.mark(_Marks.ERRORS)
        for name_text in sorted(_names(dead)):
            name = _parse(name_text)
            if name is None:
                continue
            try:
                task = Task.from_json(_read(dead / name_text))
            except FileNotFoundError:
                continue  # redriven meanwhile
            try:
                error: str | None = _read(errors / name.task_id).decode("utf-8")
            except FileNotFoundError:
                error = None
            yield DeadLetter(task, name.attempts, error)

    @_touches_files
    def redrive(self, ids: Iterable[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)
        dead = self._dirs.state(State.DEAD)
        moved = 0
        for name_text in sorted(_names(dead)):
            name = _parse(name_text)
            if name is None or (wanted is not None and name.task_id not in wanted):
                continue
            if self._requeue(dead / name_text, name, 0):
                _unlink(self._dirs.mark(_Marks.ERRORS) / name.task_id)
                moved += 1
        return moved

    @_touches_files
    def purge(self) -> None:
        for directory in self._dirs.all_subdirectories():
            for name in os.listdir(directory):
                _unlink(directory / name)
        with self._lock:
            self._queued.clear()

    def close(self) -> None:
        """Nothing to release: no connection, no thread; the directory stays."""

    def away(self, exc: OSError) -> QueueUnavailableError:
        return QueueUnavailableError(str(self.path), exc.strerror or str(exc))

    # -- leases by id (release-all, the resumable local run) ---------------------------------

    @_touches_files
    def leased_ids(self) -> list[str]:
        names = (_parse(n) for n in _names(self._dirs.state(State.LEASED)))
        return [name.task_id for name in names if name is not None]

    @_touches_files
    def ack_ids(self, ids: Iterable[str]) -> int:
        return self._complete_ids(set(ids), (State.LEASED, State.DELAYED, State.QUEUED))

    @_touches_files
    def release_all(self) -> int:
        leased = self._dirs.state(State.LEASED)
        released = 0
        for name_text in _names(leased):
            name = _parse(name_text)
            if name is not None:
                released += self._requeue(
                    leased / name_text, name, max(0, name.attempts - 1), first=True
                )
        return released


@dataclass(slots=True)
class _ChunkResult:
    """What one thread's chunk of a send did, and the error that stopped it."""

    inserted: int = 0
    already_present: int = 0
    error: BaseException | None = None


def _collect(future: Future[_ChunkResult], result: SendResult) -> BaseException | None:
    """Add a chunk's counts to the send's; its error, if it had one."""
    done = future.result()
    result.inserted += done.inserted
    result.already_present += done.already_present
    return done.error


def _checked_ids(chunk: list[Task]) -> tuple[list[Task], TaskfleetError | None]:
    """The tasks before the first whose id cannot be a file name, and the error for that one."""
    for index, task in enumerate(chunk):
        problem = task_id_problem(task.id)
        if problem is not None:
            return chunk[:index], TaskfleetError(f"cannot queue task {task.id!r}: {problem}")
    return chunk, None


def _not_found(path: Path) -> QueueNotFoundError:
    """The error for a directory that holds no queue, naming the nearest queues beside it."""
    try:
        beside = [p.name for p in path.parent.iterdir() if (p / META_FILE).exists()]
    except OSError:
        beside = []
    return queue_not_found(
        f"no fq:// queue in {path} (no {META_FILE}; fq:///absolute/dir, fq://relative/dir)",
        path.name,
        beside,
    )
