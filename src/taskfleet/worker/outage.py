"""The one owner of "a service is away": the queue, or where the events are written.

A queue restarts, a network cuts out, a disk fills up: the worker must ride that out instead of
dying with the tasks it holds. The parts of the supervisor that call a service (the dispatch's
`receive`, the attempts' events and `ack`/`retry`/`dead_letter`, the leases' `extend` and
`release`) leave their work where it was when the call fails that way, and report the failure
here. Only two kinds of failure are an outage: `QueueUnavailableError` (each backend raises it
for what may pass: a lost connection, a timeout, throttling, a server starting, a locked or
failing SQLite file; the event queue's sink raises it too) and `EventLogError` (the event log's
write failed: a full disk, a quota, a read-only or immutable file). Anything else is an error
as before.

While the outage lasts, the supervisor leases no new task; the children go on with the tasks
they hold; their outcomes stay pending, with their events buffered in the sink, and nothing is
acked before its events are written. Every `retry_at` the supervisor tries to recover, in the
order of a normal batch: a probe of the queue, write the buffered events, settle the pending
attempts, renew every lease held; when all that works the outage is over and leasing resumes.
A lease that expired meanwhile only means the task may run twice (delivery is at least once).
Each outage is also a `non_fatal_exception` event (written once the events can be written), so
`taskfleet monitor` and the report list it among the worker errors.
The tries back off exponentially with jitter (`RETRY_BASE`, doubling, up to `RETRY_CAP`), so a
service that comes back is used again within `RETRY_CAP` seconds; the log has one line when an
outage starts, at most one every `LOG_EVERY` seconds while it lasts, and one when it ends.

An outage longer than `--outage-seconds` ends the run (`StopReason.OUTAGE`, exit code 1): the
children are killed, the tasks not settled are given back if the queue answers (else their
leases expire), and `summary` is the one line that says which service stayed away.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskfleet.errors import QueueUnavailableError
from taskfleet.events.schema import EventType
from taskfleet.events.sinks import EventLogError
from taskfleet.worker.attempts import backoff_delay
from taskfleet.worker.run_events import RunEvents

if TYPE_CHECKING:
    from taskfleet.queues.base import Queue

log = logging.getLogger("taskfleet.worker")

RETRY_BASE = 0.5  # seconds before the first try to recover; doubles with each failed try
RETRY_CAP = 10.0  # the longest wait between two tries
LOG_EVERY = 30.0  # seconds between two "still away" lines


def service_away(exc: BaseException) -> str | None:
    """What is away, in words, if `exc` says a service is away for now; else None."""
    if isinstance(exc, QueueUnavailableError):
        return str(exc)
    if isinstance(exc, EventLogError):
        return f"the event log {exc.filename} cannot be written: {exc.strerror}"
    return None


class Outage:
    """Whether a service is away, since when, and when to try again (see the module
    docstring for what the supervisor does meanwhile)."""

    def __init__(
        self,
        limit_seconds: float,
        events: RunEvents | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.limit = limit_seconds
        self.events = events
        self.rng = rng or random.Random()
        self.started: float | None = None
        self.what = ""  # the service that is away, in words (the latest failure's)
        self.tries = 0  # failed tries since the outage started
        self.retry_at = 0.0
        self.last_logged = 0.0
        self.gave_up = False

    @property
    def away(self) -> bool:
        return self.started is not None

    def absorb(self, exc: BaseException, doing: str) -> bool:
        """If `exc` says a service is away, start the outage (or note that it goes on) and
        return True: the caller keeps its work for the next try. Otherwise False."""
        what = service_away(exc)
        if what is None:
            return False
        now = time.monotonic()
        self.what = what
        if self.started is None:
            self.started = self.last_logged = now
            self.tries = 0
            log.warning(
                "%s (while %s): leasing no new tasks and keeping outcomes until it is back; "
                "running tasks go on; the run stops if it stays away %.0f s (--outage-seconds)",
                what,
                doing,
                self.limit,
            )
            if self.events is not None:  # buffered with the rest until it can be written
                self.events.emit(EventType.NON_FATAL_EXCEPTION, exception=f"{what} (while {doing})")
        elif now - self.last_logged >= LOG_EVERY:
            self.last_logged = now
            log.warning("still away after %.0f s: %s", now - self.started, what)
        if now >= self.retry_at:  # count one failed try per try, not one per failing call
            self.tries += 1
            self.retry_at = now + backoff_delay(self.tries, RETRY_BASE, RETRY_CAP, self.rng)
        return True

    def retry_due(self, now: float) -> bool:
        return self.started is not None and now >= self.retry_at

    def seconds_until_retry(self, now: float) -> float:
        return max(0.0, self.retry_at - now)

    def over_limit(self, now: float) -> bool:
        return self.started is not None and now - self.started >= self.limit

    def ended(self, now: float) -> None:
        """Every call of the try to recover worked: the service is back."""
        if self.started is None:
            return
        log.warning("back after %.1f s: %s", now - self.started, self.what)
        self.started = None
        self.retry_at = 0.0

    def give_up(self) -> None:
        """Past the limit: the run ends, and `summary` says why."""
        self.gave_up = True

    @property
    def summary(self) -> str:
        """The one line a run that gave up ends with."""
        return (
            f"{self.what}; it stayed away longer than --outage-seconds {self.limit:g}, so the "
            "run stopped: the tasks it had not finished come back when their leases expire "
            "(or at once if they could be given back); run the same command again"
        )


def open_riding_out(open_queue: Callable[[], Queue], limit_seconds: float) -> Queue:
    """Open a worker's queue, waiting (with the same backoff) while its service is away: a
    machine that boots while the queue restarts must not exit for it. Past `limit_seconds` the
    last `QueueUnavailableError` is raised (one line, exit 1); anything else at once."""
    outage = Outage(limit_seconds)
    while True:
        try:
            queue = open_queue()
        except QueueUnavailableError as exc:
            outage.absorb(exc, "opening the queue")
            now = time.monotonic()
            if outage.over_limit(now):
                raise
            time.sleep(outage.seconds_until_retry(now))
            continue
        outage.ended(time.monotonic())
        return queue
