"""The manager's view of the job's events: drained from the event queue into a local file,
folded into statistics, and each machine's newest sign of life.

On a queue that cannot count its tasks (Pub/Sub), the events are also what the manager knows
of the work: the tasks left, when it knows which were loaded (`taskfleet run`: loaded minus
completed minus dead-lettered, by distinct task id), and the machines whose worker stopped
because the queue stayed empty.

Reading an event queue consumes it, so a manager that watches events is the job's monitor
(`taskfleet run` always is; `pool start --events-file` makes it one); `taskfleet monitor
--events-file` on the same file then shows the job. The events are written to the file before
they are acknowledged, as `taskfleet monitor` does (it is the same `QueueSource`).
"""

from __future__ import annotations

import os

from taskfleet.events.reader import parse_timestamp
from taskfleet.monitoring.monitor import QueueSource
from taskfleet.monitoring.statistics import EventStats


class QueueEventWatch:
    """Drains the event queue at each check; `stats` holds every event seen."""

    def __init__(
        self,
        event_queue_url: str,
        events_file: str | os.PathLike[str],
        stats: EventStats | None = None,
    ) -> None:
        self.stats = stats if stats is not None else EventStats()
        self.source = QueueSource(event_queue_url, events_file)
        self.source.read_previous(self.stats)

    def drain(self) -> int:
        """Read every event waiting now; returns how many."""
        total = 0
        while (count := self.source.poll(self.stats, 0)) > 0:
            total += count
        return total

    def last_seen(self) -> dict[str, float]:
        self.drain()
        seen = {}
        for host in self.stats.host_summaries():
            if host.last_seen is not None:
                seen[host.hostname] = parse_timestamp(host.last_seen)
        return seen

    def remaining(self) -> int | None:
        """Tasks loaded and neither completed nor dead-lettered, from the events; None when
        the watch was not told which tasks were loaded."""
        if self.stats.expected is None:
            return None
        return max(0, self.stats.tasks_not_completed - self.stats.dead_open)

    def stopped_idle(self) -> set[str]:
        """Machines whose worker stopped with reason `idle` (events drained at `last_seen`)."""
        return self.stats.stopped_idle()

    def close(self) -> None:
        self.drain()
        self.source.finish(self.stats)
