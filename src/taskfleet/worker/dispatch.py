"""Leasing and dispatch: take from the queue what the children can start soon, and deal it out.

Prefetch is bounded. Each child holds its running task plus some expected work (from the moving
average of task times), and is topped up only when it falls to half of that, so leases are
taken in batches. A local run owns its queue, so it buffers deeply (the children never wait for
the supervisor); a worker sharing a queue with other machines takes little, so it never hoards
tasks that others could start, nor holds leases it cannot renew in time. The dispatch also
decides that the work is over: the queue is drained (a local run, whose feed, if it loads its
tasks as it runs, has loaded them all: see `feed.py`), it stayed empty for
`--exit-when-idle`, or `--max-num-tasks` were received. While a service is away
(`outage.py`) the supervisor does not call `fill`: nothing new is leased.
"""

from __future__ import annotations

import logging
import time

import orjson

from taskfleet.queues.base import Message, Queue
from taskfleet.worker.attempts import Attempts
from taskfleet.worker.child_process import ChildProcess
from taskfleet.worker.children import Children
from taskfleet.worker.feed import TaskFeed
from taskfleet.worker.leases import Leases
from taskfleet.worker.outage import Outage
from taskfleet.worker.run_events import RunEvents
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.stopping import Stopping, StopReason

log = logging.getLogger("taskfleet.worker")

LOCAL_BUFFERED_WORK_SECONDS, LOCAL_MAX_PREFETCH = 0.1, 2048
SHARED_BUFFERED_WORK_SECONDS, SHARED_MAX_PREFETCH = 0.02, 64
RECEIVE_BATCH = 500
#: A local run on a queue of this process (memory://) takes what the children have room for in
#: one receive (no round trip to save, and no other consumer): a turn that settles a large
#: batch must not find the children's buffers, topped up 500 tasks a turn, run dry.
LOCAL_RECEIVE_BATCH = 4096
#: How long after its delay a task retried on a queue that cannot count may take to show again
#: (Pub/Sub rounds a delay up to whole seconds, and redelivers on its own schedule).
REDELIVERY_GRACE = 3.0
#: How often a worker past --exit-when-idle looks again while tasks of a flow wait for work
#: in flight elsewhere.
FLOW_POLL_SECONDS = 0.5


class Dispatch:
    """Leases tasks for the children with room, and notices when there is no more work."""

    def __init__(
        self,
        queue: Queue,
        children: Children,
        leases: Leases,
        attempts: Attempts,
        stopping: Stopping,
        events: RunEvents,
        settings: WorkerSettings,
        outage: Outage,
        *,
        local_mode: bool,
        feed: TaskFeed | None = None,
    ) -> None:
        self.queue = queue
        self.outage = outage
        self.children = children
        self.leases = leases
        self.attempts = attempts
        self.stopping = stopping
        self.events = events
        self.counts = attempts.counts
        self.max_num_tasks = settings.max_num_tasks
        self.exit_when_idle = settings.exit_when_idle
        self.local_mode = local_mode
        self.feed = feed  # a local run's tasks, loaded as it runs (feed.py)
        in_process = local_mode and not queue.shared_between_processes
        self.receive_batch = LOCAL_RECEIVE_BATCH if in_process else RECEIVE_BATCH
        if local_mode:
            self.buffered_work, self.max_prefetch = LOCAL_BUFFERED_WORK_SECONDS, LOCAL_MAX_PREFETCH
        else:
            self.buffered_work = SHARED_BUFFERED_WORK_SECONDS
            self.max_prefetch = SHARED_MAX_PREFETCH
        self.next_n = 0  # dispatch number of the next task handed to a child
        self.next_receive_at = 0.0
        self.last_activity = time.monotonic()

    def fill(self, now: float) -> None:
        """Lease what the children can start soon, and hand it to them; then let a local run's
        feed load its next tasks, while the children work."""
        if now < self.next_receive_at:
            return
        self._lease_and_deal(now)
        feed = self.feed
        if feed is not None and not feed.exhausted and self.stopping.reason is None:
            waiting = feed.loaded.inserted - self.counts.received
            # while the children have tasks queued, or once the queue ran dry; not while they
            # wait for tasks that are loaded already (after their first ones, say, dealt before
            # any task time is known), which the next turn hands them
            if waiting <= 0 or self.children.all_have_work_queued():
                feed.top_up(waiting)

    def _lease_and_deal(self, now: float) -> None:
        wanted = 0
        open_children = []
        for child in self.children:
            if not child.alive or child.kill_reason or child.input_closed:
                continue
            target = self._target_inflight()
            if len(child.inflight) > target // 2:
                continue  # top up in batches, not one task at a time
            room = min(target - len(child.inflight), child.quota_left())
            if room > 0:
                wanted += room
                open_children.append(child)
        limit = self.max_num_tasks
        if limit is not None and not self.local_mode:
            wanted = min(wanted, limit - self.counts.received)
            if wanted <= 0 and self._idle():
                self.stopping.stop(StopReason.LIMIT)
                return
        if wanted <= 0:
            return
        idle = self._idle()
        wait = 0.0 if self.local_mode or not idle else 1.0
        try:
            received = self.queue.receive(
                min(wanted, self.receive_batch), self.leases.seconds, wait
            )
        except Exception as exc:
            if not self.outage.absorb(exc, "receiving tasks"):
                self.events.non_fatal(exc, "receiving tasks")
            self.next_receive_at = now + 1.0
            return
        if received.dead_lettered:
            try:
                self.attempts.dead_lettered_by_queue(received.dead_lettered)
            except Exception as exc:  # their events stay buffered until they can be written
                if not self.outage.absorb(exc, "writing events"):
                    raise
            self.last_activity = now
        if not received:
            self._queue_empty(now, idle)
            return
        self.last_activity = now
        self.counts.received += len(received)
        self._distribute(received, open_children)

    def _idle(self) -> bool:
        """No task is out with a child, and none waits to be settled."""
        return self.children.inflight_total() == 0 and not self.attempts.pending

    def _target_inflight(self) -> int:
        """How many tasks a child should hold: the running one plus the buffered work."""
        if self.children.max_tasks_per_child == 1:
            return 1
        average = self.children.average_task_seconds
        if average is None:
            return 2
        extra = int(self.buffered_work / max(average, 1e-6)) + 1
        return min(self.max_prefetch, 1 + extra)

    def _distribute(self, messages: list[Message], children: list[ChildProcess]) -> None:
        """Deal the messages round-robin to the children with room, emptiest first."""
        children.sort(key=lambda c: len(c.inflight))
        target = self._target_inflight()
        room = {
            child.slot: min(target - len(child.inflight), child.quota_left()) for child in children
        }
        pending = iter(messages)
        while children:
            for child in list(children):
                message = next(pending, None)
                if message is None:
                    return
                try:
                    child.dispatch(self.next_n, message)
                except orjson.JSONEncodeError as exc:  # the loader's limits keep these out
                    self.attempts.undeliverable(message, f"{type(exc).__name__}: {exc}")
                    continue
                self.next_n += 1
                room[child.slot] -= 1
                if room[child.slot] <= 0:
                    children.remove(child)
        leftover = list(pending)
        if leftover:  # nobody has room after all (a child died meanwhile): give them back
            self.leases.release(leftover)

    def resume(self, now: float) -> None:
        """A service that was away is back: lease at once; the outage was not idle time."""
        self.next_receive_at = 0.0
        self.last_activity = now

    def look_again_now(self, *, released: bool = False) -> None:
        """Nothing runs and every outcome is settled: a local run that found its queue empty
        while tasks ran may be over now, so look at once instead of after the pause. An ack
        on a queue that keeps a flow's state (`released`) may have made waiting tasks
        visible: any worker looks at once."""
        if self.local_mode or released:
            self.next_receive_at = 0.0

    def _queue_empty(self, now: float, idle: bool) -> None:
        """Nothing to lease: a local run may be done; a shared worker may have been idle long
        enough to exit; otherwise look again shortly."""
        if self.local_mode:
            if self.feed is not None and not self.feed.exhausted:
                self.feed.load_next()  # the children took all that was loaded
                self.next_receive_at = 0.0
                return
            if idle and not self.queue.counts_tasks:
                # No count to read (Pub/Sub): nothing left to lease and nothing running, the
                # run is over once the tasks it retried with a delay are visible again.
                if now >= self.attempts.retries_hidden_until + REDELIVERY_GRACE:
                    self.stopping.stop(StopReason.DONE)
                    return
            elif idle:
                try:
                    stats = self.queue.stats()
                except Exception as exc:
                    if not self.outage.absorb(exc, "counting the tasks left"):
                        raise
                    return
                if stats.remaining == 0:
                    self.stopping.stop(StopReason.DONE)
                    return
                # only delayed retries are left: look again shortly
            self.next_receive_at = now + (0.05 if idle else 0.2)
            return
        limit = self.exit_when_idle
        if idle and limit is not None and now - self.last_activity >= limit:
            if self._others_will_release_work():
                self.next_receive_at = now + FLOW_POLL_SECONDS
                return
            log.info("queue empty for %.0f s: exiting", now - self.last_activity)
            self.stopping.stop(StopReason.IDLE)
            return
        self.next_receive_at = now + (0.0 if idle else 0.5)

    def _others_will_release_work(self) -> bool:
        """Tasks of a flow wait for work that is in flight elsewhere (leased by another
        worker, or retried with a delay): when it completes they become visible, so a worker
        that found nothing to lease keeps polling instead of exiting idle. Tasks blocked behind
        a dead letter do not count: only a redrive releases them."""
        if not self.queue.tracks_dependencies:
            return False
        try:
            stats = self.queue.stats()
        except Exception as exc:
            if not self.outage.absorb(exc, "counting the tasks that wait"):
                raise
            return True
        return (stats.waiting or 0) - (stats.blocked or 0) > 0
