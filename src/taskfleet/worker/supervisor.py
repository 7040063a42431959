"""The supervisor: leases tasks, feeds child processes, enforces deadlines, records outcomes.

It never runs user code. One thread runs one loop: top up the children from the queue (bounded
prefetch), wait for outcomes on the children's pipes, write the outcome events in a batch,
then ack, retry or dead-letter the messages (events first, so no outcome is ever acked without
a record), check deadlines and dead children, renew leases, and react to signals and
termination notices.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import random
import selectors
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskfleet.events.schema import hostname, make_event, utc_timestamp
from taskfleet.events.sinks import EventSink
from taskfleet.queues.base import Message, Queue
from taskfleet.worker.attempts import Outcome, RetryPolicy, backoff_delay
from taskfleet.worker.children import ChildProcess
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.shared_memory import SharedFlags

log = logging.getLogger("taskfleet.worker")

COMMIT_INTERVAL = 0.05  # seconds between event batches (and so between ack batches)
COMMIT_MAX = 2000  # outcomes that force a batch sooner
DEADLINE_CHECK_INTERVAL = 0.05
# Prefetch: the running task plus this much expected work per child, within these bounds. A
# local run owns its queue, so it buffers deeply (the children never wait for the supervisor);
# a worker sharing a queue with other machines takes little, so it never hoards tasks that
# others could start, nor holds leases it cannot renew in time.
LOCAL_BUFFERED_WORK_SECONDS, LOCAL_MAX_PREFETCH = 0.1, 2048
SHARED_BUFFERED_WORK_SECONDS, SHARED_MAX_PREFETCH = 0.02, 64
RECEIVE_BATCH = 500
COALESCE_SECONDS = 0.002
TIMEOUT_KILL_GRACE = 1.0


@dataclass
class RunCounts:
    """What happened in this run, for the progress view and the final summary."""

    completed: int = 0
    failed_attempts: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0
    received: int = 0
    by_event: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.completed + self.dead_lettered


class Supervisor:
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
    ) -> None:
        self.queue = queue
        self.process_task = process_task
        self.worker_data = worker_data
        self.settings = settings
        self.sink = sink
        self.flags = flags
        self.local_mode = local_mode
        self.on_progress = on_progress
        self.termination_check = termination_check
        self.policy = RetryPolicy(
            settings.retry_on_exit,
            settings.retry_on_exception,
            settings.retry_on_timeout,
            queue.max_attempts,
        )
        self.counts = RunCounts()
        self.ctx = multiprocessing.get_context("fork")
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, ChildProcess] = {}  # worker_id -> child
        self.next_worker_id = 0
        self.next_n = 0
        self.pending: list[Outcome] = []
        self.last_commit = time.monotonic()
        self.avg_elapsed: float | None = None
        self.stop_reason: str | None = None  # "signal", "spot", "done", "idle", "limit"
        self.kill_deadline: float | None = None
        self.abort = False
        self.signals = 0
        self.next_receive_at = 0.0
        self.last_activity = time.monotonic()
        self.rng = random.Random()
        self.max_tasks_per_child = 1 if settings.process_per_task else settings.max_tasks_per_child
        self.memory_limit = (
            int(settings.max_memory_per_task * 1024**3) if settings.max_memory_per_task else None
        )
        self.lease = max(settings.lease_seconds, 1.0)
        self.next_renewal = time.monotonic() + self.lease / 3
        self.spot_seen = False
        self._stopping_started = False
        self._last_deadline_check = 0.0
        self.started_at = time.monotonic()
        self.hostname = hostname()
        if local_mode:
            self.buffered_work, self.max_prefetch = LOCAL_BUFFERED_WORK_SECONDS, LOCAL_MAX_PREFETCH
        else:
            self.buffered_work = SHARED_BUFFERED_WORK_SECONDS
            self.max_prefetch = SHARED_MAX_PREFETCH

    # -- public ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First Ctrl-C/SIGTERM: graceful stop; a second one: stop at once."""
        self.signals += 1
        if self.signals >= 2:
            self.abort = True
        elif self.stop_reason is None:
            self.stop_reason = "signal"

    def run(self) -> RunCounts:
        self._emit("worker_started", num_simultaneous_tasks=self.settings.num_simultaneous_tasks)
        try:
            for _ in range(self.settings.num_simultaneous_tasks):
                self._start_child()
            while not self._loop_once():
                pass
        except BaseException as exc:
            self._emit(
                "fatal_exception",
                exception=f"{type(exc).__name__}: {exc}",
                stack_trace=traceback.format_exc(),
            )
            self._kill_everything()
            raise
        finally:
            self._emit("worker_stopped", reason=self.stop_reason)
            with contextlib.suppress(Exception):
                self.sink.flush()
            for child in list(self.children.values()):
                self._discard_child(child)
            self.selector.close()
        return self.counts

    # -- the loop -------------------------------------------------------------------------

    def _loop_once(self) -> bool:
        """One turn of the loop; True when the run is over."""
        now = time.monotonic()
        if self.abort:
            self._kill_everything()
            return True
        self._check_termination(now)
        if self.stop_reason is None:
            self._fill(now)
        elif not self._stopping_started:
            self._begin_stop()
        for child in self.children.values():
            if child.outbox:
                child.flush_outbox()
        timeout = DEADLINE_CHECK_INTERVAL
        if self.pending:
            timeout = max(0.0, min(timeout, COMMIT_INTERVAL - (now - self.last_commit)))
        if self._children_have_work_queued():
            # Every child has a task waiting behind the running one: let outcomes pile up a
            # moment, so one wake-up reads a batch instead of one line per task.
            time.sleep(COALESCE_SECONDS)
        for key, _ in self.selector.select(timeout):
            child = key.data
            if key.fd == child.out_r:
                self._take_outcomes(child, child.read_outcomes())
        now = time.monotonic()
        self._check_children(now)
        if self.pending and (
            now - self.last_commit >= COMMIT_INTERVAL or len(self.pending) >= COMMIT_MAX
        ):
            self._commit()
        if now >= self.next_renewal:
            self._renew_leases(now)
        if self.on_progress is not None:
            self.on_progress(self.counts, sum(1 for c in self.children.values() if c.inflight))
        return self._finished(now)

    def _children_have_work_queued(self) -> bool:
        if self.stop_reason is not None or not self.children:
            return False
        return all(len(c.inflight) >= 3 for c in self.children.values() if c.alive)

    def _finished(self, now: float) -> bool:
        """Over once a stop was decided and every task handed out has been settled."""
        return self.stop_reason is not None and not self._inflight_total() and not self.pending

    # -- children -------------------------------------------------------------------------

    def _start_child(self) -> ChildProcess:
        worker_id = self.next_worker_id
        self.next_worker_id += 1
        inherited = [fd for c in self.children.values() for fd in (c.in_w, c.out_r)]
        child = ChildProcess(
            self.ctx,
            worker_id,
            self.process_task,
            self.worker_data,
            max_tasks=self.max_tasks_per_child,
            memory_limit=self.memory_limit,
            close_fds=inherited,
        )
        self.children[worker_id] = child
        self.selector.register(child.out_r, selectors.EVENT_READ, child)
        log.debug("started child #%d (pid %d)", worker_id, child.pid)
        return child

    def _discard_child(self, child: ChildProcess) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(child.out_r)
        if child.alive:
            child.kill("shutdown", grace=0)
            child.process.join(2)
            child.alive = False
        child.close()
        self.children.pop(child.worker_id, None)

    def _inflight_total(self) -> int:
        return sum(len(c.inflight) for c in self.children.values())

    def _target_inflight(self, child: ChildProcess) -> int:
        if self.max_tasks_per_child == 1:
            return 1
        if self.avg_elapsed is None:
            return 2
        extra = int(self.buffered_work / max(self.avg_elapsed, 1e-6)) + 1
        return min(self.max_prefetch, 1 + extra)

    def _fill(self, now: float) -> None:
        """Lease what the children can start soon, and hand it to them."""
        if now < self.next_receive_at:
            return
        wanted = 0
        open_children = []
        for child in self.children.values():
            if not child.alive or child.kill_reason or child.input_closed:
                continue
            target = self._target_inflight(child)
            if len(child.inflight) > target // 2:
                continue  # top up in batches, not one task at a time
            room = min(target - len(child.inflight), child.quota_left())
            if room > 0:
                wanted += room
                open_children.append(child)
        limit = self.settings.max_num_tasks
        if limit is not None and not self.local_mode:
            wanted = min(wanted, limit - self.counts.received)
            if wanted <= 0 and self._inflight_total() == 0 and not self.pending:
                self.stop_reason = "limit"
                return
        if wanted <= 0:
            return
        idle = self._inflight_total() == 0 and not self.pending
        wait = 0.0 if self.local_mode or not idle else 1.0
        try:
            messages = self.queue.receive(min(wanted, RECEIVE_BATCH), self.lease, wait)
        except Exception as exc:
            self._non_fatal(exc, "receiving tasks")
            self.next_receive_at = now + 1.0
            return
        if not messages:
            self._queue_empty(now, idle)
            return
        self.last_activity = now
        self.counts.received += len(messages)
        self._distribute(messages, open_children)

    def _distribute(self, messages: list[Message], children: list[ChildProcess]) -> None:
        """Deal the messages round-robin to the children with room, emptiest first."""
        children.sort(key=lambda c: len(c.inflight))
        room = {
            child.worker_id: min(
                self._target_inflight(child) - len(child.inflight), child.quota_left()
            )
            for child in children
        }
        pending = iter(messages)
        while children:
            for child in list(children):
                message = next(pending, None)
                if message is None:
                    return
                child.dispatch(self.next_n, message)
                self.next_n += 1
                room[child.worker_id] -= 1
                if room[child.worker_id] <= 0:
                    children.remove(child)
        leftover = list(pending)
        if leftover:  # nobody has room after all (a child died meanwhile): give them back
            self._release(leftover)

    def _queue_empty(self, now: float, idle: bool) -> None:
        if self.local_mode:
            if idle:
                stats = self.queue.stats()
                if stats.remaining == 0:
                    self.stop_reason = "done"
                    return
                # only delayed retries are left: look again shortly
            self.next_receive_at = now + (0.05 if idle else 0.2)
            return
        limit = self.settings.exit_when_idle
        if idle and limit is not None and now - self.last_activity >= limit:
            log.info("queue empty for %.0f s: exiting", now - self.last_activity)
            self.stop_reason = "idle"
            return
        self.next_receive_at = now + (0.0 if idle else 0.5)

    def _take_outcomes(self, child: ChildProcess, raws: list[dict[str, Any]]) -> None:
        for raw in raws:
            if not child.inflight or child.inflight[0].n != raw["n"]:
                log.warning("child #%d reported an unexpected task; ignored", child.worker_id)
                continue
            entry = child.inflight.popleft()
            elapsed = float(raw["elapsed"])
            self.avg_elapsed = (
                elapsed if self.avg_elapsed is None else 0.9 * self.avg_elapsed + 0.1 * elapsed
            )
            if "exception" in raw:
                outcome = self.policy.exception(entry.message, child.worker_id, child.pid, raw)
            else:
                outcome = self.policy.completed(entry.message, child.worker_id, child.pid, raw)
            self.pending.append(outcome)

    def _check_children(self, now: float) -> None:
        check_deadlines = now - self._last_deadline_check >= DEADLINE_CHECK_INTERVAL
        if check_deadlines:
            self._last_deadline_check = now
        for child in list(self.children.values()):
            if child.sigkill_at is not None:
                child.escalate(now)
            if not child.process.is_alive():
                self._child_ended(child)
                continue
            if check_deadlines and child.inflight and child.kill_reason is None:
                started = child.slot.started()
                if started is not None:
                    n, start = started
                    head = child.inflight[0]
                    if n == head.n and now - start > self.settings.max_runtime:
                        log.warning(
                            "task %s ran longer than %g s: killing child #%d",
                            head.message.task_id,
                            self.settings.max_runtime,
                            child.worker_id,
                        )
                        child.kill("timeout", head.n, grace=TIMEOUT_KILL_GRACE)
        if self.kill_deadline is not None and now >= self.kill_deadline:
            for child in self.children.values():
                if child.alive and child.inflight and child.kill_reason is None:
                    child.kill("shutdown", grace=0)

    def _child_ended(self, child: ChildProcess) -> None:
        """A child is gone: read its last outcomes, settle its tasks, replace it."""
        self._take_outcomes(child, child.read_outcomes())
        exit_code = child.reap()
        child.alive = False
        started = child.slot.started(child_alive=False)
        running_n = started[0] if started else -1
        now = time.monotonic()
        to_release: list[Message] = []
        for entry in child.inflight:
            if entry.n == running_n and child.kill_reason is None:
                elapsed = now - started[1] if started else 0.0
                self.pending.append(
                    self.policy.exited(
                        entry.message, child.worker_id, child.pid, exit_code, elapsed
                    )
                )
                log.warning(
                    "task %s: child #%d exited with code %s",
                    entry.message.task_id,
                    child.worker_id,
                    exit_code,
                )
            elif (
                entry.n == running_n
                and child.kill_reason == "timeout"
                and (child.kill_target == entry.n)
            ):
                elapsed = now - started[1] if started else 0.0
                self.pending.append(
                    self.policy.timed_out(
                        entry.message,
                        child.worker_id,
                        child.pid,
                        elapsed,
                        self.settings.max_runtime,
                    )
                )
            else:
                to_release.append(entry.message)
        child.inflight.clear()
        if to_release:
            self._release(to_release)
        replace = self.stop_reason is None
        worker_id = child.worker_id
        self._discard_child(child)
        if replace:
            log.debug("replacing child #%d", worker_id)
            self._start_child()

    # -- outcomes -------------------------------------------------------------------------

    def _commit(self) -> None:
        """Write the batch's events, then settle the messages: never ack before the record."""
        batch, self.pending = self.pending, []
        acks: list[Message] = []
        retries: list[Outcome] = []
        deads: list[Outcome] = []
        counts = self.counts
        emit = self.sink.emit
        host = self.hostname
        by_event = counts.by_event
        for outcome in batch:
            message = outcome.message
            event = {
                "timestamp": utc_timestamp(),
                "hostname": host,
                "event_type": outcome.event_type,
                "task_id": message.task.id,
                "attempt": message.attempt,
                "worker_id": outcome.worker_id,
                "pid": outcome.pid,
            }
            for key, value in outcome.fields.items():
                if value is not None:
                    event[key] = value
            emit(event)
            by_event[outcome.event_type] = by_event.get(outcome.event_type, 0) + 1
            if outcome.action == "ack":
                acks.append(message)
                counts.completed += 1
                continue
            if outcome.event_type != "task_completed":
                counts.failed_attempts += 1
            if outcome.action == "retry":
                retries.append(outcome)
            else:
                deads.append(outcome)
                self._emit(
                    "task_dead_lettered",
                    task_id=message.task_id,
                    attempt=message.attempt,
                    exception=outcome.error,
                )
        self.sink.flush()
        self.queue.ack(acks)
        for outcome in retries:
            delay = backoff_delay(
                outcome.message.attempt,
                self.settings.backoff_base,
                self.settings.backoff_cap,
                self.rng,
            )
            if self.queue.retry(outcome.message, delay, outcome.error):
                counts.retried += 1
            else:  # the queue counted more attempts than we knew of
                counts.dead_lettered += 1
        for outcome in deads:
            self.queue.dead_letter(outcome.message, outcome.error)
            counts.dead_lettered += 1
        self.last_commit = time.monotonic()

    def _release(self, messages: list[Message]) -> None:
        try:
            self.queue.release(messages)
            self.counts.released += len(messages)
        except Exception as exc:
            self._non_fatal(exc, "releasing tasks")

    def _renew_leases(self, now: float) -> None:
        messages = [e.message for c in self.children.values() for e in c.inflight]
        if messages:
            try:
                self.queue.extend(messages, self.lease)
            except Exception as exc:
                self._non_fatal(exc, "renewing leases")
        self.next_renewal = now + self.lease / 3

    # -- stopping -------------------------------------------------------------------------

    def _check_termination(self, now: float) -> None:
        if self.spot_seen or self.termination_check is None:
            return
        if self.termination_check():
            self.spot_seen = True
            self.flags.set_termination_notice()
            self._emit("spot_termination")
            log.warning("termination notice received: no new tasks; finishing running ones")
            if self.stop_reason is None:
                self.stop_reason = "spot"

    def _begin_stop(self) -> None:
        """Stop leasing, give back prefetched tasks at once, let running ones finish."""
        self._stopping_started = True
        reason = self.stop_reason
        if reason in ("signal", "spot"):
            self.flags.set_shutdown_requested()
            delay = self.settings.shutdown_grace_period
            if reason == "spot" and self.settings.simulate_spot_termination_delay is not None:
                delay = self.settings.simulate_spot_termination_delay
            self.kill_deadline = time.monotonic() + delay
            log.info(
                "stopping (%s): no new tasks; running tasks have %.0f s to finish",
                "signal" if reason == "signal" else "termination notice",
                delay,
            )
        to_release: list[Message] = []
        for child in self.children.values():
            if not child.alive:
                continue
            started = child.slot.stop_starting()
            if started is None:  # stuck holding its lock: stop it the hard way
                child.kill("shutdown", grace=0)
                continue
            keep = [e for e in child.inflight if e.n <= started]
            to_release.extend(e.message for e in child.inflight if e.n > started)
            child.inflight.clear()
            child.inflight.extend(keep)
            child.close_input()
        if to_release:
            self._release(to_release)

    def _kill_everything(self) -> None:
        """Second signal or fatal error: kill every child now and give back every task."""
        messages = []
        for child in self.children.values():
            if child.alive:
                child.kill("shutdown", grace=0)
        for child in list(self.children.values()):
            child.process.join(5)
            self._take_outcomes(child, child.read_outcomes())
            messages.extend(e.message for e in child.inflight)
            child.inflight.clear()
            child.alive = False
        if self.pending:
            with contextlib.suppress(Exception):
                self._commit()
        if messages:
            self._release(messages)

    # -- events ---------------------------------------------------------------------------

    def _emit(self, event_type: str, **fields: Any) -> None:
        self.sink.emit(make_event(event_type, hostname=self.hostname, **fields))

    def _non_fatal(self, exc: BaseException, doing: str) -> None:
        log.warning("error while %s: %s: %s", doing, type(exc).__name__, exc)
        self._emit(
            "non_fatal_exception",
            exception=f"{type(exc).__name__}: {exc} (while {doing})",
            stack_trace=traceback.format_exc(),
        )


def install_signal_handlers(supervisor: Supervisor) -> Callable[[], None]:
    """SIGINT and SIGTERM ask the supervisor to stop; returns a function restoring the old ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        supervisor.request_stop()
        if supervisor.signals == 1:
            log.warning(
                "%s: finishing running tasks (up to %.0f s); press Ctrl-C again to stop at once",
                signal.Signals(signum).name,
                supervisor.settings.shutdown_grace_period,
            )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
