"""The supervisor: one loop, as named steps over small collaborators. It never runs user code.

The flow of a task, and the channels between the supervisor and its children::

               receive                    task line                     process_task
    queue ──────────────▶ Dispatch ───▶ [task pipe] ───────────▶ child ─────────────┐
      ▲                                                            │                │
      │ ack / retry /                                 "n starts"   ▼                │
      │ dead_letter           Children ◀── reads ──── [StartGate] ◀┘                │
      │                          │    ◀──────────────── [outcome pipe] ◀────────────┘
      │                          ▼ outcome
      └───────────────────── Attempts ──── events, flushed first ───▶ sink

    channel        written by                             read by
    task pipe      Dispatch (a batch of JSON lines)       the child, line by line
    outcome pipe   the child (a JSON line per outcome)    Children, every line there is
    StartGate      the child: "task n starts now";        the child: "may task n start?";
                   Stopping: "start nothing after n"      Children: deadlines, and after a
                                                          crash, which task was running
    SharedFlags    Stopping: notice, shutdown requested   the tasks, through WorkerData
    queue          Dispatch (receive), Leases (extend,    -
                   release), Attempts (ack, retry,
                   dead_letter)
    Outage         whoever found a service away           the loop: lease or not, when to
                                                          try again, when to give up

The pipes hold 1 MiB and the supervisor's ends never block, so neither side waits on the
other; no message per task ever goes from the supervisor to a running child. The events of a
batch are flushed before its queue calls, so no outcome is acked without its record.

Each turn of the loop: stop at once if told to; notice a termination notice; lease and deal
tasks, or begin the stop; send the children their tasks; wait briefly for outcomes; check the
children (deadlines, ends); kill what outlived the grace period; settle a batch of attempts
(at once when nothing runs: no outcome will come to share the batch, and a local run may be
over); renew leases; report progress. While a service is away (`outage.py`) the turn leases
nothing, settles nothing and renews nothing: it tries to recover when the backoff says so, and
gives up past `--outage-seconds`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from taskfleet.events.schema import EventType, hostname
from taskfleet.events.sinks import EventSink
from taskfleet.queues.base import Queue
from taskfleet.worker.attempts import Attempts, RetryPolicy, RunCounts
from taskfleet.worker.children import DEADLINE_CHECK_INTERVAL, Children
from taskfleet.worker.dispatch import Dispatch
from taskfleet.worker.feed import TaskFeed
from taskfleet.worker.keep_alive import KeepAlive, keep_alive_interval
from taskfleet.worker.leases import Leases
from taskfleet.worker.outage import Outage
from taskfleet.worker.run_events import RunEvents
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.shared_memory import SharedFlags
from taskfleet.worker.stopping import Stopping

# When every child has tasks queued behind the running one, let outcomes pile up this long, so
# one wake-up reads a batch instead of one line per task.
COALESCE_SECONDS = 0.002


class Supervisor:
    """Runs the loop of one worker: `run()` until the work is over or the worker is stopped."""

    def __init__(
        self,
        queue: Queue,
        process_task: Callable[..., Any],
        worker_data: Any,
        settings: WorkerSettings,
        sink: EventSink,
        flags: SharedFlags,
        *,
        local_mode: bool,
        on_progress: Callable[[RunCounts, int], None] | None = None,
        termination_check: Callable[[], bool] | None = None,
        feed: TaskFeed | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.sink = sink
        self.on_progress = on_progress
        self.counts = RunCounts()
        self.events = RunEvents(sink, hostname())
        self.outage = Outage(settings.outage_seconds, self.events)
        self.attempts = Attempts(
            queue,
            sink,
            RetryPolicy.from_settings(settings, queue.max_attempts),
            self.counts,
            hostname=self.events.hostname,
        )
        self.leases = Leases(queue, settings.lease_seconds, self.counts, self.events, self.outage)
        self.children = Children(process_task, worker_data, settings, self.attempts, self.leases)
        self.stopping = Stopping(
            self.children,
            self.leases,
            self.attempts,
            self.events,
            flags,
            settings,
            termination_check,
        )
        interval = keep_alive_interval(settings, local_mode=local_mode)
        self.keep_alive = KeepAlive(self.events, interval, time.monotonic())
        self.dispatch = Dispatch(
            queue,
            self.children,
            self.leases,
            self.attempts,
            self.stopping,
            self.events,
            settings,
            self.outage,
            local_mode=local_mode,
            feed=feed,
        )

    # -- public -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First Ctrl-C/SIGTERM: graceful stop; a second one: stop at once."""
        self.stopping.request_stop()

    @property
    def interrupted(self) -> bool:
        """The run was stopped from outside (signal, termination notice) before its end."""
        return self.stopping.interrupted

    def run(self) -> RunCounts:
        self.events.emit(
            EventType.WORKER_STARTED, num_simultaneous_tasks=self.settings.num_simultaneous_tasks
        )
        try:
            for _ in range(self.settings.num_simultaneous_tasks):
                self.children.start()
            while not self._turn():
                pass
        except BaseException as exc:
            self.events.fatal(exc)
            self.stopping.kill_everything()
            raise
        finally:
            self.events.emit(EventType.WORKER_STOPPED, reason=self.stopping.reason)
            with contextlib.suppress(Exception):
                self.sink.flush()
            self.children.close()
        return self.counts

    # -- the loop ---------------------------------------------------------------------------

    def _turn(self) -> bool:
        """One turn of the loop; True when the run is over."""
        if self.stopping.abort:
            self.stopping.kill_everything()
            return True
        now = time.monotonic()
        self.stopping.check_termination_notice()
        if self.outage.away:
            self._ride_out(now)
        if self.stopping.reason is None:
            if not self.outage.away:
                self.dispatch.fill(now)
        elif not self.stopping.begun:
            self.stopping.begin()
        if self._over():
            return True  # not one more wait for outcomes that cannot come
        self.children.flush_inputs()
        self._wait_for_outcomes(now)
        now = time.monotonic()
        self.children.check(now, replace=self.stopping.reason is None)
        self.stopping.enforce_grace(now)
        nothing_running = not self.children.inflight_total()
        if not self.outage.away:
            self._settle_and_renew(now, nothing_running)
        if nothing_running:
            self.dispatch.look_again_now()
        if self.on_progress is not None:
            self.on_progress(self.counts, self.children.running())
        self.keep_alive.tick(now, self.children.running())
        return self._over()

    def _settle_and_renew(self, now: float, nothing_running: bool) -> None:
        """Settle the pending batch if it is due, and renew the leases if that is due; a
        service found away keeps both for the outage's tries."""
        try:
            completed = self.counts.completed
            self.attempts.settle_if_due(now, nothing_running=nothing_running)
            if self.counts.completed != completed and self.queue.tracks_dependencies:
                self.dispatch.look_again_now(released=True)
            if self.leases.renewal_due(now):
                self.leases.renew(self.children.leased_messages(), now)
        except Exception as exc:
            if not self.outage.absorb(exc, "settling tasks"):
                raise

    def _ride_out(self, now: float) -> None:
        """A service is away: give up past `--outage-seconds`; else, when the backoff says so,
        try to recover (a probe of the queue, then the buffered events, the pending attempts
        and every lease, in the order of a normal batch); if all of it works, it is over."""
        if self.outage.over_limit(now):
            self.outage.give_up()
            self.stopping.abandon()
            return
        if self.stopping.grace_over(now):  # a signal's stop cannot wait for the service
            self.stopping.abandon()
            return
        if not self.outage.retry_due(now):
            return
        try:
            self.queue.stats()
            self.sink.flush()
            while self.attempts.pending:
                self.attempts.settle()
            self.leases.renew(self.children.leased_messages(), now)
        except Exception as exc:
            if not self.outage.absorb(exc, "trying again"):
                raise
            return
        now = time.monotonic()
        self.outage.ended(now)
        self.dispatch.resume(now)

    def _wait_for_outcomes(self, now: float) -> None:
        """Wait for outcomes until the next deadline check or the pending batch is due (while
        a service is away: until the next try to recover)."""
        timeout = DEADLINE_CHECK_INTERVAL
        until_due = self.attempts.seconds_until_due(now)
        if self.outage.away:
            until_due = self.outage.seconds_until_retry(now)
        if until_due is not None:
            timeout = min(timeout, until_due)
        if self.stopping.reason is None and self.children.all_have_work_queued():
            time.sleep(COALESCE_SECONDS)
        self.children.read_outcomes(timeout)

    def _over(self) -> bool:
        """Over once a stop was decided and every task handed out has been settled."""
        return (
            self.stopping.reason is not None
            and not self.children.inflight_total()
            and not self.attempts.pending
        )
