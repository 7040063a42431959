"""The pauses between a job's runs, so that its rate counts only the time its workers ran.

A resumed local run appends to the event log of the runs before it, and a rate over the whole
span of that log would count the hours between two runs as working time. Each worker writes
`worker_started` and `worker_stopped`; a pause is a stretch from the moment the last running
worker stopped to the next start. Only such stretches are taken out: time before the first
start is kept, and a worker that ended without its `worker_stopped` event (killed) counts as
running until the last event, so a gap the events do not bound is kept, as before.
"""

from __future__ import annotations

from typing import Any

from taskfleet.events.reader import parse_timestamp
from taskfleet.events.schema import EventType

RUN_BOUNDS = frozenset({EventType.WORKER_STARTED, EventType.WORKER_STOPPED})


class RunPauses:
    """Collects the starts and stops of workers (few events) and measures the pauses."""

    def __init__(self) -> None:
        self._bounds: list[tuple[str, int]] = []

    def add(self, timestamp: Any, event_type: str) -> None:
        """A `worker_started` or `worker_stopped` event (one without a timestamp is ignored)."""
        if isinstance(timestamp, str):
            self._bounds.append((timestamp, 1 if event_type == EventType.WORKER_STARTED else -1))

    def paused_seconds(self) -> float:
        """Seconds during which no worker ran between two runs."""
        running = 0
        paused = 0.0
        stopped_at: str | None = None
        try:
            for timestamp, step in sorted(self._bounds):  # a stop before a start at one time
                if step > 0:
                    if running == 0 and stopped_at is not None:
                        paused += max(0.0, parse_timestamp(timestamp) - parse_timestamp(stopped_at))
                        stopped_at = None
                    running += 1
                else:
                    running = max(0, running - 1)  # a stop whose start is in a file not read
                    if running == 0:
                        stopped_at = timestamp
        except ValueError:  # a timestamp that is not one: no pause can be measured
            return 0.0
        return paused
