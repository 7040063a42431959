"""The leases a worker holds: how long they last, renewing them, and giving tasks back.

A lease hides a task from other consumers while this worker has it. Every task handed to a
child, running or queued behind the running one, is renewed every third of the lease, so a task
may run longer than the queue's lease without being delivered twice. Tasks that will not run
here after all (prefetched at shutdown, queued on a child that died) are given back at once,
without counting an attempt. While the queue is away (`outage.py`) nothing is renewed: the
first renewal after it is back covers every lease held.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from taskfleet.queues.base import Message, Queue
from taskfleet.worker.attempts import RunCounts
from taskfleet.worker.outage import Outage, service_away
from taskfleet.worker.run_events import RunEvents

MIN_LEASE_SECONDS = 1.0


class Leases:
    """Renews and releases the leases of the tasks this worker holds."""

    def __init__(
        self,
        queue: Queue,
        lease_seconds: float,
        counts: RunCounts,
        events: RunEvents,
        outage: Outage,
    ) -> None:
        self.queue = queue
        self.seconds = max(
            min(lease_seconds, queue.max_lease_seconds or lease_seconds), MIN_LEASE_SECONDS
        )
        self.counts = counts
        self.events = events
        self.outage = outage
        self.next_renewal = time.monotonic() + self.seconds / 3

    def release(self, messages: Sequence[Message]) -> None:
        """Give the tasks back now; their attempt is not counted. If the queue is away they
        come back when their leases expire instead."""
        try:
            self.queue.release(messages)
            self.counts.released += len(messages)
        except Exception as exc:
            if not self.outage.absorb(exc, "releasing tasks"):
                self.events.non_fatal(exc, "releasing tasks")

    def renewal_due(self, now: float) -> bool:
        return now >= self.next_renewal

    def renew(self, messages: Sequence[Message], now: float) -> None:
        """Extend the leases of `messages` to a full lease from now. An outage is raised (the
        supervisor's try to recover must know); other errors are survived."""
        if messages:
            try:
                self.queue.extend(messages, self.seconds)
            except Exception as exc:
                if service_away(exc) is not None:
                    raise
                self.events.non_fatal(exc, "renewing leases")
        self.next_renewal = now + self.seconds / 3
