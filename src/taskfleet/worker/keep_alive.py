"""`keep_alive` events: a worker's sign of life, so that a silent machine can be told from a
slow task.

A worker draining a queue writes one every `--keep-alive-seconds` (60 by default), whether or
not a task ends in that time; `taskfleet monitor` shows each host's last one, and a pool
manager can replace a machine whose last sign of life is too old. A `--task-file` run has no
one watching from elsewhere, so it writes none unless asked. Each is flushed at once: a sign
of life that waits in a buffer says nothing.
"""

from __future__ import annotations

from taskfleet.events.schema import EventType
from taskfleet.worker.run_events import RunEvents
from taskfleet.worker.settings import WorkerSettings

#: Seconds between keep_alive events of a worker draining a queue, unless told otherwise.
QUEUE_KEEP_ALIVE_SECONDS = 60.0


def keep_alive_interval(settings: WorkerSettings, *, local_mode: bool) -> float | None:
    """The interval of a run's keep_alive events, or None for none."""
    chosen = settings.keep_alive_seconds
    if chosen is None:
        return None if local_mode else QUEUE_KEEP_ALIVE_SECONDS
    return chosen or None  # 0: never


class KeepAlive:
    """Writes a `keep_alive` event whenever the interval has passed since the last one."""

    def __init__(self, events: RunEvents, interval: float | None, now: float) -> None:
        self.events = events
        self.interval = interval
        self.last = now

    def tick(self, now: float, running: int) -> None:
        """Called every turn of the loop; writes an event (with the tasks running) when due."""
        if self.interval is None or now - self.last < self.interval:
            return
        self.last = now
        self.events.emit(EventType.KEEP_ALIVE, running_tasks=running)
        self.events.sink.flush()
