"""`taskfleet monitor`: fold events from files or an event queue into `EventStats`, show them
live, and end with the summary.

Two sources, one loop:
- `FileSource` reads events files, once or following them while they grow (`--follow`).
- `QueueSource` drains an event queue. Each batch is folded, the events that were new are
  appended to the output file with one write, and only then acked, so a monitor killed at
  any point loses nothing: unacked events come back when their lease expires, and events
  already in the output file (read again at start) are recognised as duplicates and not
  written twice.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from taskfleet.events.reader import EventFileReader, schema_error
from taskfleet.events.schema import dumps_line
from taskfleet.events.sinks import EVENT_QUEUE_MAX_ATTEMPTS, FileEventSink
from taskfleet.monitoring.statistics import EventStats, Summary
from taskfleet.redact import redact

DEFAULT_LEASE_SECONDS = 60.0
MAX_POLL_FAILURES = 20  # in a row; each waits longer, up to 30 s (about 8 minutes in all)
QUEUE_BATCH = 500


class EventSource(Protocol):
    def poll(self, stats: EventStats, wait: float) -> int:
        """Fold the events available now (waiting up to `wait` seconds for some); return how
        many were read."""
        ...

    def finish(self, stats: EventStats) -> None:
        """No more polling: report what is incomplete (a torn last line) and release."""
        ...

    def describe(self) -> str: ...


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Folding creates millions of short-lived dicts and no reference cycles; the cyclic
    collector would only rescan them (about a tenth of the run time), so it is paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class FileSource:
    """Events files, read to their end; with `follow`, polled again for new lines."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], stats: EventStats) -> None:
        self.readers = [EventFileReader(p, stats.bad_line) for p in paths]

    def describe(self) -> str:
        return ", ".join(r.name for r in self.readers)

    def poll(self, stats: EventStats, wait: float = 0.0) -> int:
        count = 0
        with _gc_paused():
            for reader in self.readers:
                for batch in reader.read_batches():
                    stats.add_all(batch)
                    count += len(batch)
        if not count and wait:
            time.sleep(wait)
        return count

    def finish(self, stats: EventStats) -> None:
        for reader in self.readers:
            reader.finish()

    def missing(self) -> list[str]:
        return [r.name for r in self.readers if not Path(r.path).exists()]


class QueueSource:
    """Drains an event queue into an output file (written before each ack)."""

    def __init__(
        self,
        url: str,
        output_file: str | os.PathLike[str],
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        batch: int = QUEUE_BATCH,
    ) -> None:
        from taskfleet.queues import open_queue

        self.url = url
        self.output_file = Path(output_file)
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.queue = open_queue(url, max_attempts=EVENT_QUEUE_MAX_ATTEMPTS)
        self._out = FileEventSink(self.output_file)

    def describe(self) -> str:
        return f"event queue {redact(self.url)} -> {self.output_file}"

    def read_previous(self, stats: EventStats) -> int:
        """Fold the events an earlier monitor already saved, so the summary covers the whole
        job and events delivered again are recognised as duplicates."""
        if not self.output_file.exists() or self.output_file.stat().st_size == 0:
            return 0
        source = FileSource([self.output_file], stats)
        count = source.poll(stats)
        source.finish(stats)
        with open(self.output_file, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            # A monitor killed mid-write left half a line (reported above; its events were
            # not acked, so they come again). End it, so new events start on a line of their own.
            self._out.emit_line(b"")
            self._out.flush()
        return count

    def poll(self, stats: EventStats, wait: float) -> int:
        messages = self.queue.receive(self.batch, self.lease_seconds, wait_seconds=wait)
        if not messages:
            return 0
        events: list[dict[str, Any]] = []
        lines: dict[int, bytes] = {}  # id(event) -> its line in the output file
        for message in messages:
            data = message.task.data
            line = self._line(data)
            if line is None:  # not an event: reported with the unreadable lines, and acked
                stats.malformed_event(data)
            else:
                events.append(data)
                lines[id(data)] = line
        for event in stats.add_new(events):
            self._out.emit_line(lines[id(event)])
        self._out.flush()  # durable in the output file...
        self.queue.ack(messages)  # ...before the queue forgets them
        return len(messages)

    @staticmethod
    def _line(data: Any) -> bytes | None:
        """`data` as its line in the output file, or None when it is not an event: it breaks
        the schema, or holds a value that no JSON line can (an integer beyond 64 bits)."""
        if not isinstance(data, dict) or schema_error(data) is not None:
            return None
        try:
            return dumps_line(data)
        except TypeError:
            return None

    def finish(self, stats: EventStats) -> None:
        self._out.close()
        self.queue.close()


@dataclass
class MonitorOptions:
    follow: bool = False
    idle_timeout: float | None = None  # stop after this long without new events
    exit_when_done: bool = False  # stop when every listed task is completed or dead
    refresh: float = 1.0  # seconds between screen updates (raised when summaries get slow)
    poll_wait: float = 0.5


class _StopFlag:
    """First SIGINT/SIGTERM: stop after the current batch (the summary is still printed).
    A second SIGINT: stop at once."""

    def __init__(self) -> None:
        self.stopped = False
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stopped = True
        self.signal = signum

    def __enter__(self) -> _StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals be
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_monitor(
    source: EventSource,
    stats: EventStats,
    options: MonitorOptions,
    show: Callable[[Summary, bool], None] | None = None,
) -> tuple[Summary, bool]:
    """Read until done; returns the final summary and whether a signal stopped the run.

    `show(summary, final)` is called every `options.refresh` seconds (only while following)
    and once at the end.
    """
    if not options.follow:
        source.poll(stats, 0.0)
        source.finish(stats)
        summary = stats.summary()
        if show:
            show(summary, True)
        return summary, False

    refresh = options.refresh
    failures = 0
    next_show = 0.0
    last_event = time.monotonic()
    with _StopFlag() as stop:
        try:
            while not stop.stopped:
                try:
                    count = source.poll(stats, options.poll_wait)
                    failures = 0
                except Exception as exc:  # a queue that is briefly unreachable or busy
                    failures += 1
                    if failures > MAX_POLL_FAILURES:
                        raise
                    delay = min(30.0, 0.5 * 2 ** (failures - 1))
                    print(
                        f"monitor: reading events failed ({type(exc).__name__}: "
                        f"{redact(str(exc))}); "
                        f"trying again in {delay:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(delay)
                    continue
                now = time.monotonic()
                if count:
                    last_event = now
                if show and now >= next_show:
                    started = time.monotonic()
                    show(stats.summary(), False)
                    cost = time.monotonic() - started
                    # Keep the screen from eating the CPU that reading needs.
                    next_show = time.monotonic() + max(refresh, 10 * cost)
                if (
                    options.exit_when_done
                    and stats.expected is not None
                    and stats.tasks_not_completed - stats.dead_open <= 0
                ):
                    break
                if (
                    options.idle_timeout is not None
                    and not count
                    and now - last_event >= options.idle_timeout
                ):
                    break
        finally:
            source.finish(stats)
    summary = stats.summary()
    if show:
        show(summary, True)
    return summary, stop.stopped and stop.signal == signal.SIGINT


def write_remaining(task_file: str, stats: EventStats, out: str | os.PathLike[str]) -> int:
    """Write the tasks of `task_file` not yet completed (with their data) as a task file:
    JSON list for `.json`, JSON Lines otherwise. Written to a temporary name and renamed, so
    a crash never leaves half a file where a rerun would read it."""
    import orjson

    from taskfleet.tasks import iter_tasks

    out_path = Path(out)
    as_list = out_path.suffix.lower() == ".json"
    tmp = out_path.with_name(out_path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as f:
        if as_list:
            f.write(b"[")
        for task in iter_tasks(task_file):
            if stats.is_completed(task.id):
                continue
            line = orjson.dumps({"id": task.id, "data": task.data})
            if as_list:
                f.write(b",\n  " if count else b"\n  ")
            f.write(line)
            if not as_list:
                f.write(b"\n")
            count += 1
        if as_list:
            f.write(b"\n]\n" if count else b"]\n")
    os.replace(tmp, out_path)
    return count
