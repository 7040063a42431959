"""Event sinks: where events go (a JSONL file, an event queue, or both).

Writing is batched and controlled by the caller. `emit` only serialises into a buffer; `flush`
makes the whole buffer durable with one write (one `os.write` for a file, one `send` for an event
queue). The runtime flushes *before* it acks the tasks whose outcome the batch records, so a
crash can duplicate an event (the task runs again) but never lose one.

Why a file sink can be shared by many processes: the file is opened with `O_APPEND` and each
flush is a single `write(2)` of whole lines. On a local file system the kernel appends each such
write at the end of the file as one unit, so lines from different processes never interleave or
tear; only a crash in the middle of a write can leave a torn last line, which the readers report
and skip.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from taskfleet.errors import path_error
from taskfleet.events.schema import dumps_line


class EventLogError(OSError):
    """Writing the event log failed (a full disk, a quota, a read-only or failing file system,
    a file made immutable): the events stay buffered, and the same write may succeed later.
    The worker's outage owner pauses the run until it does."""


#: An event queue is drained by the monitor; a message that keeps coming back (the monitor was
#: killed before its ack, again and again) must not be dead-lettered after the task queue's usual
#: 3 attempts, or events would silently go missing.
EVENT_QUEUE_MAX_ATTEMPTS = 1000


@runtime_checkable
class EventSink(Protocol):
    """Where events go. `emit` is cheap (buffer only); `flush` is the one durable write."""

    def emit(self, event: dict[str, Any]) -> None:
        """Buffer one event."""
        ...

    def flush(self) -> None:
        """Make every event emitted so far durable in the sink, in one write per batch."""
        ...

    def close(self) -> None:
        """Flush, then release the file or queue. Idempotent."""
        ...


class _BufferedSink:
    """The buffering shared by the sinks: thread-safe emit, one flush at a time, fork-safe.

    A child process forked while events sit in the buffer would otherwise write them a second
    time; `os.register_at_fork` empties the buffers of every live sink in the child (the parent
    still owns and writes those events).
    """

    _live: weakref.WeakSet[_BufferedSink] = weakref.WeakSet()

    def __init__(self) -> None:
        self._buffer: list[Any] = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._closed = False
        _BufferedSink._live.add(self)

    def _take(self) -> list[Any]:
        with self._buffer_lock:
            items, self._buffer = self._buffer, []
        return items

    def _put_back(self, items: list[Any]) -> None:
        """A failed write keeps its events, ahead of newer ones, for the next flush."""
        with self._buffer_lock:
            self._buffer[:0] = items

    def flush(self) -> None:
        """Write everything emitted so far in one `_write`; if it fails, the whole batch stays
        buffered for the next flush (its events are not durable, so the caller must not ack
        their tasks)."""
        if not self._buffer:
            return
        with self._flush_lock:
            items = self._take()
            if not items:
                return
            try:
                self._write(items)
            except BaseException:
                self._put_back(items)
                raise

    def close(self) -> None:
        """Flush, then release the file or queue. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._release()

    def _write(self, items: list[Any]) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Events emitted but not yet flushed."""
        return len(self._buffer)

    def _after_fork_in_child(self) -> None:
        self._buffer = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def __enter__(self) -> _BufferedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


def _clear_buffers_in_child() -> None:
    for sink in list(_BufferedSink._live):
        sink._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clear_buffers_in_child)


class FileEventSink(_BufferedSink):
    """Appends events to a JSONL file; each flush is one `os.write` of whole lines.

    `fsync=True` also syncs the file on every flush, which makes events survive a power loss
    and not only a process crash, at the cost of a disk round trip per batch.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self._fsync = fsync
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise path_error(
                self.path, exc, "event log", "give --event-log-file a path in a writable folder"
            ) from None

    def emit(self, event: dict[str, Any]) -> None:
        # Serialise now: the caller may reuse or change the dict after emit returns.
        line = dumps_line(event)
        with self._buffer_lock:
            self._buffer.append(line)

    def emit_line(self, line: bytes) -> None:
        """Buffer an already serialised line (the monitor copies events without re-encoding)."""
        if not line.endswith(b"\n"):
            line += b"\n"
        with self._buffer_lock:
            self._buffer.append(line)

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        view = memoryview(data)
        written = 0
        # A regular file takes the whole write at once unless the disk is full or a quota is
        # hit; then finish the rest rather than lose it. If it fails, the file is cut back to
        # where the batch began, so that it keeps no half-written line and no part of a batch
        # that is written again, whole, once it can be (the worker's outage owner retries).
        start = None
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
            while written < len(data):
                written += os.write(self._fd, view[written:])
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:  # name the file: a write has none of its own
            if written and start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            raise EventLogError(exc.errno, exc.strerror, str(self.path)) from exc

    def _release(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"FileEventSink({str(self.path)!r})"


class QueueEventSink(_BufferedSink):
    """Sends events to an event queue, each as a task `{"id": <uuid4 hex>, "data": event}`.

    The id is chosen at emit time, so a flush that fails half-way and is retried does not
    duplicate the events the queue already took (`send` skips ids it already holds, where the
    backend remembers them).
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        from taskfleet.queues import open_queue

        self.url = url
        self._queue = open_queue(url, max_attempts=EVENT_QUEUE_MAX_ATTEMPTS)

    def emit(self, event: dict[str, Any]) -> None:
        from taskfleet.tasks import Task

        # Round-trip through JSON now so the queue gets plain JSON data, whatever the result.
        task = Task(uuid.uuid4().hex, orjson.loads(dumps_line(event)))
        with self._buffer_lock:
            self._buffer.append(task)

    def _write(self, tasks: list[Any]) -> None:
        from taskfleet.errors import QueueUnavailableError
        from taskfleet.queues.base import SendInterrupted

        try:
            self._queue.send(tasks)
        except SendInterrupted as exc:
            # The event queue is away: say so as itself. The whole batch stays buffered and is
            # sent again (ids chosen at emit time: a backend that remembers ids skips those it
            # took; others may hold an event twice, which the statistics count as a duplicate).
            if isinstance(exc.cause, QueueUnavailableError):
                raise exc.cause from None
            raise

    def _release(self) -> None:
        self._queue.close()

    def __repr__(self) -> str:
        from taskfleet.redact import redact

        return f"QueueEventSink({redact(self.url)!r})"


class FanOutSink:
    """Sends every event to several sinks (a file and an event queue).

    Flush writes the sinks in order and stops at the first failure, so the caller does not ack
    tasks whose events reached only some sinks; the sinks that did succeed are not written
    again for those events.
    """

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # close every sink even if one fails
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> FanOutSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FanOutSink({self.sinks!r})"


class NullSink:
    """Drops every event (events are off)."""

    def emit(self, event: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_event_sink(
    file: str | os.PathLike[str] | None = None,
    queue_url: str | None = None,
    *,
    fsync: bool = False,
) -> EventSink:
    """The sink for a run: a JSONL file, an event queue, both, or nothing.

    `queue_url` is the URL of the event queue itself; for the companion event queue of a task
    queue pass `taskfleet.queues.event_queue_url(task_queue_url)`.
    """
    sinks: list[EventSink] = []
    if file is not None:
        sinks.append(FileEventSink(file, fsync=fsync))
    if queue_url is not None:
        try:
            sinks.append(QueueEventSink(queue_url))
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
    if not sinks:
        return NullSink()
    if len(sinks) == 1:
        return sinks[0]
    return FanOutSink(sinks)


__all__ = [
    "EVENT_QUEUE_MAX_ATTEMPTS",
    "EventLogError",
    "EventSink",
    "FanOutSink",
    "FileEventSink",
    "NullSink",
    "QueueEventSink",
    "open_event_sink",
]
