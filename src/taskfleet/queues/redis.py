"""The Redis queue: `redis://[:password@]host:port/db?name=JOB`, or `rediss://` for TLS.

Many workers on many hosts share one Redis server. The design (why not Streams is explained in
docs/queues-distributed.md, with measurements) is a list of visible task ids, sorted sets of
lease deadlines, delayed retries and dead letters, and hashes of bodies, attempts, lease tokens
and errors, all changed only by the Lua scripts in `redis_scripts`, one script per state change.
So every change is atomic, every lease has its own length and can be renewed or given back,
attempts count exactly (a released delivery is not counted), and the server's clock is the only
one that matters.

Batching: `send` packs a few hundred tasks into one script call and pipelines several calls per
round trip; `receive`, `ack`, `release` and `extend` are one script call per batch. An empty
`receive` with `wait_seconds` blocks on the server (BLMOVE of the ready list onto itself, which
changes nothing) instead of polling, and wakes up early when a delayed task or a lease falls due.

A server that is away for now (a lost connection, a timeout, a server still loading its data
after a restart, a replica) raises `QueueUnavailableError` from every method that calls it (the
methods marked `_calls_server`), which the worker rides out; redis-py's own retries stay short.

Consumers are named connections: a worker's `set_consumer(machine)` makes each connection of its
queue announce itself (`CLIENT SETNAME taskfleet:<queue>:<machine>`), and `consumer_activity`
reads one `CLIENT LIST`: a named connection's last command was `idle` seconds ago, and one
blocked in BLMOVE waiting for work is active now. A worker that dies closes its connections,
so it drops out of the list; one that hangs keeps them, idle.

Needs Redis 6.2 or newer (LPOP with a count, BLMOVE) and redis-py 5 or newer.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlencode, urlunsplit

import orjson

from taskfleet.errors import (
    QueueConnectionError,
    QueueUnavailableError,
    QueueURLError,
    TaskFileError,
    TaskfleetError,
)
from taskfleet.flows.graph import DependencyGraph
from taskfleet.queues import redis_scripts as lua
from taskfleet.queues.base import (
    DEFAULT_QUEUE_NAME,
    DeadLetter,
    Message,
    Queue,
    QueueAddress,
    QueueStats,
    Received,
    SendInterrupted,
    SendResult,
    UnsupportedOperationError,
    attempts_for_new_queue,
    queue_not_found,
    tasks_of,
)
from taskfleet.redact import redact
from taskfleet.tasks import Task
from taskfleet.tasks.model import as_tasks
from taskfleet.tasks.readers import DuplicateTracker

if TYPE_CHECKING:
    import redis

    from taskfleet.tasks.batches import TaskBatch

KEY_PREFIX = "taskfleet"
#: Characters a Redis client name may not hold (spaces, newlines) become '_'.
_NOT_IN_CLIENT_NAMES = re.compile(r"[^!-~]")
_KEY_NAMES = (
    "meta",
    "known",
    "body",
    "att",
    "tok",
    "ready",
    "leased",
    "delayed",
    "dead",
    "err",
    # the dependency state (see redis_scripts): only flows write these
    "wait",
    "next",
    "res",
    "readers",
)
_SCRIPTS = (
    "SEND",
    "SEND_FLOW",
    "SEND_UPDATE",
    "RECEIVE",
    "ACK",
    "RETRY",
    "DEAD_LETTER",
    "RELEASE",
    "EXTEND",
    "STATS",
    "REDRIVE",
    "DEPENDENTS",
)
SEND_CHUNK = 500  # tasks per script call: short enough not to stall the server
SEND_CALLS_PER_ROUND_TRIP = 10  # so one round trip carries 5,000 tasks
# Tasks that wait for nothing a load holds back from its first waiting task on, so that a bad
# dependency graph found at its end inserts nothing (beyond it they stream: see `send`).
HOLD_FLAT = 50_000
BATCH_CHUNK = 1000  # ids per ack/release/extend/redrive script call
MAX_BLOCK_SECONDS = 1.0  # one blocking wait; a loop covers longer waits
MAX_SCAN_CALLS = 100  # SCAN calls (of about 1,000 keys each) a not-found error makes


class QueueFullError(TaskfleetError):
    """The Redis server refused a load at its memory limit (`maxmemory` with `noeviction`)."""


# Replies of a server that is starting (loading its data) or is a replica for now.
_AWAY_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN")


def is_unavailable(exc: BaseException) -> bool:
    """The server is away for now (a restart, a network cut, a failover), not refusing us."""
    import redis

    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # BusyLoadingError too
        return not isinstance(
            exc, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
        )
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_AWAY_REPLIES)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _calls_server(method: _Method) -> _Method:
    """Marks a method that calls the server: see `RedisQueue._server`."""

    @functools.wraps(method)
    def call(self: RedisQueue, *args: Any, **kwargs: Any) -> Any:
        with self._server():
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


def parse_redis_url(url: str) -> tuple[str, str, int | None]:
    """Split our options (`name`, `max_attempts`) off a Redis URL.

    Returns the URL for redis-py (with its own options, such as `socket_timeout`, kept), the
    queue name and max_attempts (None if not given).
    """
    address = RedisQueue.parse_url(url)
    return RedisQueue.client_url(address), address.name, address.max_attempts


class RedisQueue(Queue):
    """A queue kept in Redis; see the module docstring for the design."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss")
    extra: ClassVar[str | None] = "redis"
    library: ClassVar[str | None] = "redis"
    example_url: ClassVar[str] = "redis://host:6379/0?name=JOB"
    # Options other than ours (socket_timeout, ...) are redis-py's.
    passes_other_options: ClassVar[bool] = True
    exact_counts: ClassVar[bool] = True
    idempotent_send: ClassVar[bool] = True
    delayed_retry: ClassVar[bool] = True
    dead_letter_store: ClassVar[bool] = True
    reports_expired_dead_letters: ClassVar[bool] = True
    tracks_dependencies: ClassVar[bool] = True
    updates_data: ClassVar[bool] = True
    reports_consumer_activity: ClassVar[bool] = True

    def __init__(
        self,
        client: redis.Redis,
        name: str = DEFAULT_QUEUE_NAME,
        *,
        max_attempts: int | None = None,
        url: str | None = None,
        create: bool = True,
    ) -> None:
        import redis

        attempts = attempts_for_new_queue(max_attempts)
        self.name = name
        self.url = url or f"redis://?name={name}"
        self._redis = client
        self._keys = [f"{KEY_PREFIX}:{{{name}}}:{k}" for k in _KEY_NAMES]
        self._loaded: set[str] = set()  # scripts this queue has loaded on the server
        # Whether the queue holds waiting tasks (meta.flows, as the last receive saw it): only
        # then do acks carry the tasks' results, which the queue keeps for those waiting.
        self._flows = False
        try:
            stored, version = self._read_meta()
            self._scripts = {
                script_name: client.register_script(lua.script(script_name, version))
                for script_name in _SCRIPTS
            }
            if stored is not None:
                self.max_attempts = int(stored)
            elif create:
                self.max_attempts = self._create_meta(attempts)
            else:
                raise queue_not_found(
                    f"no Redis queue {name!r} at {redact(self.url)}", name, self._queue_names()
                )
        except redis.exceptions.OutOfMemoryError:  # creating it: a full server takes nothing
            raise _full(self.url) from None
        except redis.RedisError as exc:
            if is_unavailable(exc):  # a restart, a network cut: a worker waits for it
                raise QueueUnavailableError(
                    redact(self.url), f"{type(exc).__name__}: {redact(str(exc))}"
                ) from None
            raise QueueConnectionError(
                f"cannot open the Redis queue {redact(self.url)}: {type(exc).__name__}: "
                f"{redact(str(exc))}"
            ) from None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def client_url(cls, address: QueueAddress) -> str:
        """The URL for redis-py: the server, and the options that are redis-py's."""
        parts = address.parts
        if "@" in parts.path + parts.query + parts.fragment:
            # The user information ends at the first '/', '?' or '#': the rest of a password
            # holding one of them would be read as the host, the database or an option.
            raise QueueURLError(
                f"{redact(address.url)!r}: a password holding '/', '?', '#' or another "
                "reserved character must be percent-encoded (urllib.parse.quote(password, "
                "safe=''))"
            )
        if not address.parts.hostname:
            raise QueueURLError(
                f"{redact(address.url)!r}: the Redis URL names no host; write "
                "redis://host:6379/0?name=JOB"
            )
        query = urlencode(list(address.options.items()))
        return urlunsplit(address.parts._replace(query=query))

    @classmethod
    def from_address(
        cls, address: QueueAddress, max_attempts: int | None, *, create: bool = True
    ) -> RedisQueue:
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        client_url = cls.client_url(address)
        # redis-py's own retries stay short (a dropped connection is reopened at once): a
        # server that is away is the worker's outage owner's to wait for, with its own backoff.
        retry = Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), 2)
        try:
            client = redis.Redis.from_url(
                client_url, socket_connect_timeout=10, socket_keepalive=True, retry=retry
            )
        except (TypeError, ValueError) as exc:
            raise QueueURLError(f"{redact(address.url)!r}: {redact(str(exc))}") from None
        return cls(client, address.name, max_attempts=max_attempts, url=address.url, create=create)

    def _read_meta(self) -> tuple[bytes | None, tuple[int, ...]]:
        """The queue's stored max_attempts (None: no such queue) and the server's version, in
        one round trip that writes nothing, so a server at its memory limit can be opened."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(self._keys[0], "max_attempts")
        pipe.info("server")
        stored, info = pipe.execute(raise_on_error=False)
        if isinstance(stored, Exception):
            raise stored
        # A server that hides INFO (some proxies) gets the scripts without flags.
        text = str(info.get("redis_version", "0")) if isinstance(info, dict) else "0"
        version = tuple(int(part) for part in text.split(".")[:2] if part.isdigit())
        return stored, version

    def _create_meta(self, max_attempts: int) -> int:
        """Create the queue's metadata (a queue created meanwhile keeps its max_attempts).
        Scripts are not loaded here: the first call of each loads it."""
        meta = self._keys[0]
        pipe = self._redis.pipeline(transaction=False)
        pipe.hsetnx(meta, "max_attempts", max_attempts)
        pipe.hsetnx(meta, "created", time.time())
        pipe.hget(meta, "max_attempts")
        return int(pipe.execute()[-1])

    def _queue_names(self) -> list[str]:
        """The names of the queues on this database, found by a bounded SCAN of their
        metadata keys (at most `MAX_SCAN_CALLS` calls), for a `QueueNotFoundError`."""
        pattern = f"{KEY_PREFIX}:{{*}}:meta"
        names: list[str] = []
        cursor = 0
        for _ in range(MAX_SCAN_CALLS):
            cursor, keys = self._redis.scan(cursor, match=pattern, count=1000)
            for key in keys:
                text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                names.append(text[len(KEY_PREFIX) + 2 : -len("}:meta")])
            if not cursor:
                break
        return names

    # -- calls to the server ----------------------------------------------------------------

    @contextlib.contextmanager
    def _server(self) -> Iterator[None]:
        """Around every call to the server: an error that says it is away for now becomes
        `QueueUnavailableError`, which names the queue (redacted); others pass unchanged."""
        try:
            yield
        except Exception as exc:
            if is_unavailable(exc):
                raise QueueUnavailableError(
                    redact(self.url), f"{type(exc).__name__}: {redact(str(exc))}"
                ) from None
            raise

    @_calls_server
    def _run(self, script: str, args: Sequence[Any]) -> Any:
        return self._run_many(script, [args])[0]

    @_calls_server
    def _run_many(self, script: str, arg_lists: Sequence[Sequence[Any]]) -> list[Any]:
        """Several calls of one script in one round trip; the first error is raised."""
        answers = self._run_many_settled(script, arg_lists)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def _run_many_settled(self, script: str, arg_lists: Sequence[Sequence[Any]]) -> list[Any]:
        """Several calls of one script in one round trip, each answer its result or its error
        (the calls are independent: one refused leaves the others done).

        redis-py's pipelines check that scripts are loaded with an extra round trip on every
        execute; instead we send EVALSHA, preceded by SCRIPT LOAD in the same round trip the
        first time this queue calls the script (opening loads nothing: it writes nothing), and
        load it again only if the server says it is missing (a restart, SCRIPT FLUSH), then
        rerun just the calls that did not run.
        """
        import redis

        name, script = script, self._scripts[script]
        pending = list(range(len(arg_lists)))
        results: list[Any] = [None] * len(arg_lists)
        for _ in range(2):
            pipe = self._redis.pipeline(transaction=False)
            first_call = name not in self._loaded
            if first_call:
                pipe.script_load(script.script)
            for i in pending:
                pipe.evalsha(script.sha, len(self._keys), *self._keys, *arg_lists[i])
            answers = pipe.execute(raise_on_error=False)
            if first_call and not isinstance(answers.pop(0), Exception):
                self._loaded.add(name)
            missing = []
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, redis.exceptions.NoScriptError):
                    missing.append(i)
                else:
                    results[i] = answer
            if not missing:
                return results
            script.sha = self._redis.script_load(script.script)
            pending = missing
        raise redis.exceptions.NoScriptError("the server keeps forgetting the taskfleet scripts")

    @staticmethod
    def _receipt(message: Message) -> tuple[str, str]:
        token, _, task_id = message.receipt.partition(":")
        return task_id, token

    # -- protocol -------------------------------------------------------------------------

    def send(
        self, tasks: Iterable[Task | Mapping[str, Any]], batch_size: int = SEND_CHUNK
    ) -> SendResult:
        """Insert tasks; ids ever inserted (queued, leased, done or dead) are skipped.

        The iterable is consumed lazily, `SEND_CALLS_PER_ROUND_TRIP` chunks at a time, so memory
        stays bounded. Each chunk is atomic; an error part way (a bad entry in the task file,
        the server failing) leaves earlier round trips inserted and raises `SendInterrupted`
        with their count. Sending again is safe because known ids are skipped.

        Tasks that wait for others (`Task.after`) are held until the iterable ends, and so are
        the other tasks from the first of them on (up to `HOLD_FLAT`): then the load's
        dependencies are checked (`taskfleet.flows.graph`), and a bad graph raises
        `TaskFileError` before any of them is sent. The waiting tasks go first, so that a
        worker cannot complete a task of the load before the tasks waiting for it are there
        to receive its result.
        """
        return self._send(((task, None) for task in as_tasks(tasks)), batch_size)

    def send_batches(self, batches: Iterable[TaskBatch]) -> SendResult:
        """`send` of validated batches, whose dependency errors name the file and line."""
        return self._send(_placed_tasks(batches), SEND_CHUNK)

    def send_updates(
        self, batches: Iterable[TaskBatch], *, rerun_completed: bool = False
    ) -> SendResult:
        """`send_batches`, and tasks already present take the batches' data (see the base
        class), each chunk in one script call (`SEND_UPDATE`), so a worker never sees a task
        half changed. A completed task's body is deleted on ack, so completed tasks cannot be
        compared: they are left alone and counted (`completed_unknown`), with
        `rerun_completed` or not; a changed dead letter is queued again under it.

        A load with tasks that wait for others updates the tasks present first, then sends
        the new ones through `send`, which holds them until their dependencies are done: the
        update changes data, never what a present task waits for (its place in the flow was
        counted when it was loaded)."""
        tasks = list(tasks_of(batches))  # read whole first: a bad entry changes nothing
        rerun = "1" if rerun_completed else "0"
        result = SendResult()
        try:
            if not any(task.after for task in tasks):
                self._send_round_trips("SEND_UPDATE", tasks, SEND_CHUNK, result, [rerun, "1"])
                return result
            new_ids = self._send_round_trips("SEND_UPDATE", tasks, SEND_CHUNK, result, [rerun, "0"])
        except BaseException as exc:  # Ctrl-C too: say what went in before it
            raise SendInterrupted(result.inserted, exc, result.already_present) from exc
        new = set(new_ids)
        sent = self._send(((task, None) for task in tasks if task.id in new), SEND_CHUNK)
        result.inserted += sent.inserted
        result.already_present += sent.already_present
        result.ids_seen += sent.ids_seen
        return result

    def _send(self, placed: Iterable[tuple[Task, object]], batch_size: int) -> SendResult:
        batch_size = max(1, min(BATCH_CHUNK, batch_size or SEND_CHUNK))  # Lua unpack limit
        round_trip = batch_size * SEND_CALLS_PER_ROUND_TRIP
        result = SendResult()
        waits: dict[str, Sequence[str]] = {}  # what the waiting tasks wait for, for the check
        places: dict[str, object] = {}  # where they are, made into text only for an error
        waiting: list[Task] = []
        flat: list[Task] = []
        try:
            for task, where in placed:
                if task.after:
                    waits[task.id] = task.after
                    if where is not None:
                        places[task.id] = where
                    waiting.append(task)
                    continue
                flat.append(task)
                # A flat load streams; from its first waiting task on, a load holds.
                if len(flat) >= (HOLD_FLAT if waiting else round_trip):
                    self._send_round_trips("SEND", flat[:round_trip], batch_size, result)
                    del flat[:round_trip]
            if waiting:
                graph = DependencyGraph()
                graph.add_batch(waits, lambda task_id: _place(places, task_id))
                held = {task.id for task in flat}
                graph.check(known=held, exists=self._known_among)
                self._send_round_trips("SEND_FLOW", waiting, batch_size, result)
            self._send_round_trips("SEND", flat, batch_size, result)
            return result
        except TaskFileError as exc:
            if result.inserted == 0 and result.already_present == 0:
                raise  # nothing was sent: the error as it is
            cause = TaskFileError(
                str(exc).replace(
                    "Nothing was loaded.",
                    "None of the tasks that wait was loaded; loading the fixed file skips "
                    "the others, which were.",
                )
            )
            raise SendInterrupted(result.inserted, cause, result.already_present) from exc
        except BaseException as exc:  # Ctrl-C too: say what went in before it
            # What went in before the error stays in (sending again skips it); say how much.
            raise SendInterrupted(result.inserted, exc, result.already_present) from exc

    def _send_round_trips(
        self,
        script: str,
        tasks: list[Task],
        batch_size: int,
        result: SendResult,
        prefix: Sequence[str] = (),
    ) -> list[str]:
        """Send `tasks` with `script` (SEND, SEND_FLOW or SEND_UPDATE, whose arguments start
        with `prefix`), `SEND_CALLS_PER_ROUND_TRIP` calls of `batch_size` tasks per round
        trip, counting what went in into `result` as each round trip is answered (so a
        refusal part way is raised with the count right). Returns the ids SEND_UPDATE left
        for `send` (new ones, when told not to insert them)."""
        if script == "SEND_FLOW" and tasks:
            self._flows = True
        left: list[str] = []
        chunks = _chunks(tasks, batch_size)
        for start in range(0, len(chunks), SEND_CALLS_PER_ROUND_TRIP):
            calls = [
                [*prefix, *_send_args(script, chunk)]
                for chunk in chunks[start : start + SEND_CALLS_PER_ROUND_TRIP]
            ]
            refused: Exception | None = None
            with self._server():  # the server away: QueueUnavailableError, ridden out
                answers = self._run_many_settled(script, calls)
            for answer in answers:
                if isinstance(answer, Exception):
                    refused = refused or answer
                    continue
                counts = [int(n) for n in answer[:6]]
                result += SendResult(counts[0], counts[1], counts[0] + counts[1])
                if len(counts) > 2:
                    changes = result.changes
                    changes.updated += counts[2]
                    changes.dead_updated += counts[3]
                    changes.rerun += counts[4]
                    changes.completed_unknown += counts[5]
                    left.extend(_text(x) for x in answer[6:])
            if refused is not None:
                raise _send_refused(refused, self.url)
        return left

    @_calls_server
    def _known_among(self, ids: Collection[str]) -> list[str]:
        """Those of `ids` the queue holds or held (for the dependency check of a load)."""
        asked = list(ids)
        pipe = self._redis.pipeline(transaction=False)
        for chunk in _chunks(asked, BATCH_CHUNK):
            pipe.smismember(self._keys[1], chunk)
        flags = [flag for answer in pipe.execute() for flag in answer]
        return [task_id for task_id, flag in zip(asked, flags, strict=True) if flag]

    def receive(self, max_messages: int, lease_seconds: float, wait_seconds: float = 0) -> Received:
        if max_messages <= 0:
            return Received()
        deadline = time.monotonic() + max(0.0, wait_seconds)
        lease_ms = max(1, round(lease_seconds * 1000))
        while True:
            received = Received()
            while len(received) < max_messages:  # script calls of at most BATCH_CHUNK
                want = min(BATCH_CHUNK, max_messages - len(received))
                reply = self._run("RECEIVE", [want, lease_ms])
                dead = reply[1]
                for i in range(0, len(dead), 3):
                    error = dead[i + 1].decode("utf-8", "replace")
                    task = Task.from_json(dead[i + 2])
                    received.dead_lettered.append(DeadLetter(task, int(dead[i]), error))
                self._flows = int(reply[2]) > 0
                for item in reply[3:]:
                    token, attempt, body = item.split(b":", 2)
                    task = Task.from_json(body)
                    received.append(Message(task, f"{token.decode()}:{task.id}", int(attempt)))
                if len(reply) - 3 < want:
                    break
            if any(message.task.after for message in received):
                received[:] = self._with_dependency_results(received)
            if received or received.dead_lettered:
                return received
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return received
            hint_ms = int(reply[0])
            block = min(remaining, MAX_BLOCK_SECONDS)
            if hint_ms >= 0:
                block = min(block, hint_ms / 1000 + 0.001)
            # BLMOVE of the list onto its own tail returns as soon as the list has an element
            # and leaves it where it was: a server-side wait for new tasks, no polling.
            self._wait_for_ready(block)

    @_calls_server
    def _with_dependency_results(self, messages: list[Message]) -> list[Message]:
        """The messages, those of tasks that waited given their dependencies' results, read in
        one HMGET per 1,000 distinct dependencies (the parts of a fan-out share theirs). A
        result is kept until every task waiting for it is done, so a task delivered again
        still finds it; None for one the queue no longer has."""
        deps = list(dict.fromkeys(dep for m in messages for dep in m.task.after))
        pipe = self._redis.pipeline(transaction=False)
        for chunk in _chunks(deps, BATCH_CHUNK):
            pipe.hmget(self._keys[12], chunk)
        values = [value for answer in pipe.execute() for value in answer]
        found = {
            dep: orjson.loads(value) if value is not None else None
            for dep, value in zip(deps, values, strict=True)
        }
        return [
            Message(m.task, m.receipt, m.attempt, {dep: found[dep] for dep in m.task.after})
            if m.task.after
            else m
            for m in messages
        ]

    @_calls_server
    def _wait_for_ready(self, seconds: float) -> None:
        """Wait on the server until the ready list has an element, for at most `seconds`.

        BLMOVE of the list onto its own tail returns as soon as the list has an element and
        leaves it where it was: a server-side wait for new tasks, no polling. A server at its
        memory limit refuses BLMOVE (it may write), so there the wait is a sleep.
        """
        import redis

        ready = self._keys[5]
        try:
            self._redis.blmove(ready, ready, max(0.01, seconds), "RIGHT", "RIGHT")
        except redis.exceptions.OutOfMemoryError:
            time.sleep(seconds)

    def ack(self, messages: Sequence[Message], results: Mapping[str, Any] | None = None) -> None:
        """Done. Accepted even if the lease has passed on: the work is done either way.

        The `results` go to the server only where the queue holds waiting tasks (as the last
        receive saw it, or this client's own load of one): a flat queue's acks stay ids.
        """
        if not messages:
            return
        calls: list[list[Any]] = []
        for chunk in _chunks(list(messages), BATCH_CHUNK):
            args: list[Any] = [len(chunk), *(m.task.id for m in chunk)]
            if self._flows:
                for message in chunk:
                    task_id = message.task.id
                    args.append(task_id)
                    args.append(_result_json(task_id, (results or {}).get(task_id)))
                    args.append("\n".join(message.task.after))
            calls.append(args)
        self._run_many("ACK", calls)

    def retry(self, message: Message, delay_seconds: float = 0, error: str | None = None) -> bool:
        task_id, token = self._receipt(message)
        delay_ms = max(0, round(delay_seconds * 1000))
        args = [task_id, token, delay_ms, "0" if error is None else "1", error or ""]
        return bool(self._run("RETRY", args))

    def dead_letter(self, message: Message, error: str | None = None) -> None:
        task_id, token = self._receipt(message)
        self._run("DEAD_LETTER", [task_id, token, "0" if error is None else "1", error or ""])

    def release(self, messages: Sequence[Message]) -> None:
        pairs = [x for m in messages for x in self._receipt(m)]
        if pairs:
            self._run_many("RELEASE", _chunks(pairs, 2 * BATCH_CHUNK))

    def extend(self, messages: Sequence[Message], lease_seconds: float) -> None:
        pairs = [x for m in messages for x in self._receipt(m)]
        lease_ms = max(1, round(lease_seconds * 1000))
        if pairs:
            self._run_many(
                "EXTEND", [[lease_ms, *chunk] for chunk in _chunks(pairs, 2 * BATCH_CHUNK)]
            )

    def stats(self) -> QueueStats:
        (
            ready,
            stale,
            leased,
            expired,
            delayed,
            due,
            dead,
            inserted,
            duplicates,
            completed,
            waiting,
            blocked,
        ) = (int(x) for x in self._run("STATS", []))
        return QueueStats(
            visible=max(0, ready - stale) + expired + due,
            leased=leased - expired,
            delayed=delayed - due,
            dead=dead,
            inserted=inserted,
            completed=completed,
            duplicates_skipped=duplicates,
            waiting=waiting,
            blocked=blocked,
        )

    def dependents(self, task_ids: Iterable[str]) -> list[str]:
        """The tasks not done that wait for any of `task_ids`, directly or through others."""
        ids = list(task_ids)
        if not ids:
            return []
        return [x.decode("utf-8", "replace") for x in self._run("DEPENDENTS", ids)]

    def dead_letters(self) -> Iterator[DeadLetter]:
        """Dead letters, oldest first, read in pages (a snapshot per page, not a whole)."""
        dead_key, body_key, att_key, err_key = (self._keys[i] for i in (8, 2, 3, 9))
        start = 0
        while True:
            with self._server():
                ids = self._redis.zrange(dead_key, start, start + BATCH_CHUNK - 1)
                if not ids:
                    return
                pipe = self._redis.pipeline(transaction=False)
                pipe.hmget(body_key, ids)
                pipe.hmget(att_key, ids)
                pipe.hmget(err_key, ids)
                bodies, attempts, errors = pipe.execute()
            for body, attempt, error in zip(bodies, attempts, errors, strict=True):
                if body is not None:
                    yield DeadLetter(
                        Task.from_json(body),
                        int(attempt or 0),
                        error.decode("utf-8", "replace") if error is not None else None,
                    )
            start += len(ids)

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        if ids is None:
            moved = 0
            while True:
                n = int(self._run("REDRIVE", ["all", BATCH_CHUNK]))
                moved += n
                if n < BATCH_CHUNK:
                    return moved
        chunks = [["ids", *chunk] for chunk in _chunks(list(ids), BATCH_CHUNK)]
        return sum(int(n) for n in self._run_many("REDRIVE", chunks)) if chunks else 0

    @_calls_server
    def purge(self) -> None:
        """Delete every task, dead letter, dependency and counter; max_attempts stays."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.unlink(*self._keys[1:])
        pipe.hset(
            self._keys[0],
            mapping={"inserted": 0, "duplicates": 0, "completed": 0, "stale": 0},
        )
        pipe.hdel(self._keys[0], "flows", "held")
        pipe.execute()
        self._flows = False

    def set_consumer(self, name: str) -> None:
        """Every connection of this queue is named after the consumer from now on: the pool's
        connections are dropped, and each is opened again with `CLIENT SETNAME` when next
        used (no call here: a server away for now is met, and ridden out, by the next one)."""
        label = f"{KEY_PREFIX}:{self.name}:{_NOT_IN_CLIENT_NAMES.sub('_', name)}"
        pool = self._redis.connection_pool
        pool.connection_kwargs["client_name"] = label
        pool.disconnect()
        pool.reset()

    @_calls_server
    def consumer_activity(self) -> dict[str, float]:
        prefix = f"{KEY_PREFIX}:{self.name}:"
        now = time.time()
        seen: dict[str, float] = {}
        import redis

        try:
            clients = self._redis.client_list()
        except redis.ResponseError as exc:
            if is_unavailable(exc):
                raise
            raise UnsupportedOperationError(  # an ACL that forbids CLIENT LIST, say
                f"the Redis server of {redact(self.url)} refuses CLIENT LIST: {exc}"
            ) from None
        for client in clients:
            label = str(client.get("name", ""))
            if not label.startswith(prefix):
                continue
            blocked = "b" in str(client.get("flags", ""))  # waiting for work in BLMOVE
            at = now if blocked else now - float(client.get("idle", 0))
            consumer = label[len(prefix) :]
            seen[consumer] = max(at, seen.get(consumer, at))
        return seen

    def close(self) -> None:
        self._redis.close()


def _send_refused(error: Exception, url: str) -> Exception:
    """The error of a refused SEND call: at the memory limit, one line that says so and what to
    do (the tasks already in stay; workers can drain the queue, which frees memory)."""
    import redis

    if isinstance(error, redis.exceptions.OutOfMemoryError):
        return _full(url)
    if is_unavailable(error):  # a call refused while the server loads its data, say
        return QueueUnavailableError(redact(url), f"{type(error).__name__}: {redact(str(error))}")
    return error


def _full(url: str) -> QueueFullError:
    return QueueFullError(
        f"the Redis server of {redact(url)} is out of memory (OOM: its used memory is over its "
        "maxmemory and its policy evicts nothing), so it takes nothing new: drain it with "
        "workers (acks free memory; give them --event-queue none or an event queue on another "
        "server) or raise its maxmemory"
    )


def _send_args(script: str, chunk: list[Task]) -> list[Any]:
    """The arguments of one SEND or SEND_UPDATE call (id, body pairs; SEND_UPDATE's own come
    before them) or SEND_FLOW call (see `_flow_args`)."""
    if script != "SEND_FLOW":
        return [x for task in chunk for x in (task.id, task.to_json())]
    return _flow_args(chunk)


def _flow_args(chunk: list[Task]) -> list[Any]:
    """The arguments of one SEND_FLOW call: the count, id and body pairs, how many ids each
    task waits for where that is not one (place in the call and count), then the call's
    edges grouped as (waiters, dependencies) pairs, each joined by newlines (which no id
    holds).

    Grouped here because the client holds the load: a dependency's waiters come already
    joined, and the dependencies that share their waiters (the parts of a fan-in) share one
    pair, so the script neither walks every `after` nor builds a list per dependency, and
    a task costs two arguments instead of three. Only the first entry of an id repeated in
    the chunk has edges (the script inserts only that one)."""
    ids = [task.id for task in chunk]
    afters = [task.after for task in chunk]
    args: list[Any] = [None] * (2 * len(chunk))
    args[0::2] = ids
    args[1::2] = [task.to_json() for task in chunk]
    args.insert(0, len(chunk))
    args.append(" ".join([f"{k} {len(a)}" for k, a in enumerate(afters, 1) if len(a) != 1]))
    args += _grouped_edges(ids, afters)
    return args


def _grouped_edges(ids: list[str], afters: list[tuple[str, ...]]) -> list[str]:
    """The (waiters, dependencies) pairs of a SEND_FLOW call (see `_flow_args`), each
    dependency in one pair, its waiters in task order.

    Tasks are grouped by what they wait for first, one dict lookup a task (the 98 parts of
    a fan-out share one `after`; a fan-in's is one key): when no dependency is in two
    groups and no id is repeated, which is how flows are built, the groups are the pairs.
    Otherwise the edges are grouped a dependency at a time."""
    by_after: dict[tuple[str, ...], list[str]] = {}
    for task_id, after in zip(ids, afters, strict=True):
        if after:
            waiters = by_after.get(after)
            if waiters is None:
                by_after[after] = [task_id]
            else:
                waiters.append(task_id)
    deps = set().union(*by_after) if by_after else set()
    if len(deps) == sum(map(len, by_after)) and len(set(ids)) == len(ids):
        pairs: list[str] = []
        for after, waiters in by_after.items():
            pairs.append("\n".join(waiters))
            pairs.append("\n".join(after))
        return pairs
    waiters_of: dict[str, list[str]] = {}
    first: set[str] = set()
    for task_id, after in zip(ids, afters, strict=True):
        if task_id in first:
            continue
        first.add(task_id)
        for dep in after:
            waiters_of.setdefault(dep, []).append(task_id)
    deps_of: dict[str, list[str]] = {}
    for dep, waiters in waiters_of.items():
        deps_of.setdefault("\n".join(waiters), []).append(dep)
    return [x for joined, deps in deps_of.items() for x in (joined, "\n".join(deps))]


def _place(places: Mapping[str, object], task_id: str) -> str | None:
    where = places.get(task_id)
    return None if where is None else str(where)


def _placed_tasks(batches: Iterable[TaskBatch]) -> Iterator[tuple[Task, object]]:
    """The tasks of validated batches, each with its place in the file if it waits for others
    (a `Place`, made into `file: line N` only for an error of the dependency check); an id
    repeated within the load is refused with the line of its second entry, as
    `Queue.send_batches` does."""
    seen = DuplicateTracker()
    for batch in batches:
        for index, (task_id, body) in enumerate(zip(batch.ids, batch.bodies, strict=True)):
            if seen.is_duplicate(task_id):
                raise TaskFileError(
                    f"{batch.where(index)}: duplicate id {task_id!r}; each task id must be "
                    "unique within a task file."
                )
            task = Task.from_json(body)
            yield task, (batch.place(index) if task.after else None)


def _result_json(task_id: str, result: Any) -> bytes:
    """A task's result as JSON for the tasks waiting for it; a result JSON cannot hold is a
    clear error naming the task (never pickle: the queue is a trust boundary)."""
    try:
        return orjson.dumps(result)
    except TypeError as exc:
        raise TaskfleetError(
            f"task {task_id!r} returned a result that is not JSON ({exc}); tasks that others "
            "wait for must return JSON values (numbers, strings, lists, dicts)"
        ) from None


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
