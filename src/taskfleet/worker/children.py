"""The supervisor's set of child processes: start, replace, watch deadlines, settle a child's end.

Children are numbered by slot (0, 1, ...; a replacement gets the next number), which is the
`worker_id` of their events. This module reads their outcomes and hands them to the attempt
owner, kills a child whose task runs past `--max-runtime` (with everything below it, see
`process_tree`), and, when a child has ended, tells
the task it was running (its attempt ended: `task_exited` or `task_timed_out`) from the tasks
queued behind it (never started: given back without counting an attempt), then replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from collections.abc import Callable, Iterator
from typing import Any

from taskfleet.queues.base import Message
from taskfleet.worker import process_tree
from taskfleet.worker.attempts import Attempts
from taskfleet.worker.child_process import ChildProcess, KillReason
from taskfleet.worker.leases import Leases
from taskfleet.worker.settings import WorkerSettings

log = logging.getLogger("taskfleet.worker")

DEADLINE_CHECK_INTERVAL = 0.05
TIMEOUT_KILL_GRACE = 1.0


class Children:
    """The live children by slot, the selector over their outcome pipes, and what they ran."""

    def __init__(
        self,
        process_task: Callable[..., Any],
        worker_data: Any,
        settings: WorkerSettings,
        attempts: Attempts,
        leases: Leases,
    ) -> None:
        self.process_task = process_task
        self.worker_data = worker_data
        self.attempts = attempts
        self.leases = leases
        self.max_runtime = settings.max_runtime
        self.max_tasks_per_child = 1 if settings.process_per_task else settings.max_tasks_per_child
        self.memory_limit = (
            int(settings.max_memory_per_task * 1024**3) if settings.max_memory_per_task else None
        )
        self.average_task_seconds: float | None = None  # moving average, for prefetch
        self._selector = selectors.DefaultSelector()
        self._by_slot: dict[int, ChildProcess] = {}
        self._next_slot = 0
        self._last_deadline_check = 0.0
        # Processes this one had before the run (the caller's own): never taken for orphans.
        self._foreign = process_tree.direct_children()
        self._subreaper = process_tree.set_subreaper(True)

    def __iter__(self) -> Iterator[ChildProcess]:
        return iter(self._by_slot.values())

    # -- starting and discarding ------------------------------------------------------------

    def start(self) -> ChildProcess:
        slot = self._next_slot
        self._next_slot += 1
        inherited = [fd for c in self._by_slot.values() for fd in (c.in_w, c.out_r)]
        child = ChildProcess(
            slot,
            self.process_task,
            self.worker_data,
            max_tasks=self.max_tasks_per_child,
            memory_limit=self.memory_limit,
            close_fds=inherited,
        )
        self._by_slot[slot] = child
        self._selector.register(child.out_r, selectors.EVENT_READ, child)
        log.debug("started child #%d (pid %d)", slot, child.pid)
        return child

    def discard(self, child: ChildProcess) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.out_r)
        if child.alive:
            child.kill(KillReason.SHUTDOWN, grace=0)
            child.process.join(2)
            child.alive = False
        child.close()
        self._by_slot.pop(child.slot, None)

    def close(self) -> None:
        """Discard every child (killing any still alive) and the selector. Every child is
        signalled before any is waited for, so the children end together, not one by one."""
        children = list(self._by_slot.values())
        for child in children:
            if child.alive:
                child.kill(KillReason.SHUTDOWN, grace=0)
        for child in children:
            self.discard(child)
        if self._subreaper:
            # what tasks started and left behind (daemons in sessions of their own, orphans
            # of killed children) was re-parented here: it ends with the run
            ended = process_tree.end_orphans(keep=self._foreign)
            if ended:
                log.info("ended %d process(es) that tasks had left running", ended)
            process_tree.set_subreaper(False)
            self._subreaper = False
        self._selector.close()

    # -- what they hold ---------------------------------------------------------------------

    def inflight_total(self) -> int:
        return sum(len(c.inflight) for c in self._by_slot.values())

    def running(self) -> int:
        """Children holding at least one task."""
        return sum(1 for c in self._by_slot.values() if c.inflight)

    def leased_messages(self) -> list[Message]:
        """The messages of every task handed to a child and not yet settled."""
        return [e.message for c in self._by_slot.values() for e in c.inflight]

    def all_have_work_queued(self) -> bool:
        """Every live child has tasks waiting behind the one it runs."""
        if not self._by_slot:
            return False
        return all(len(c.inflight) >= 3 for c in self._by_slot.values() if c.alive)

    # -- talking to them --------------------------------------------------------------------

    def flush_inputs(self) -> None:
        """Write the tasks dealt to each child since the last turn, as far as its pipe takes."""
        for child in self._by_slot.values():
            if child.outbox:
                child.flush_outbox()

    def read_outcomes(self, timeout: float) -> None:
        """Wait up to `timeout` for outcomes, and take every one that arrived."""
        for key, _ in self._selector.select(timeout):
            child = key.data
            if key.fd == child.out_r:
                self.take_outcomes(child, child.read_outcomes())

    def take_outcomes(self, child: ChildProcess, raws: list[dict[str, Any]]) -> None:
        """Hand each outcome a child reported to the attempt owner, in dispatch order."""
        attempts = self.attempts
        for raw in raws:
            if not child.inflight or child.inflight[0].n != raw["n"]:
                log.warning("child #%d reported an unexpected task; ignored", child.slot)
                continue
            entry = child.inflight.popleft()
            elapsed = float(raw["elapsed"])
            average = self.average_task_seconds
            self.average_task_seconds = (
                elapsed if average is None else 0.9 * average + 0.1 * elapsed
            )
            if "exit_code" in raw:  # the task called sys.exit()
                attempts.exited(
                    entry.message,
                    child.slot,
                    child.pid,
                    raw["exit_code"],
                    elapsed,
                    exception=raw["exception"],
                    stack_trace=raw.get("stack_trace") or None,
                )
            elif "exception" in raw:
                attempts.raised(entry.message, child.slot, child.pid, raw)
            else:
                attempts.returned(entry.message, child.slot, child.pid, raw)

    # -- deadlines and ends -----------------------------------------------------------------

    def check(self, now: float, *, replace: bool) -> None:
        """Finish kills in progress, settle children that ended (replacing them if `replace`),
        and kill a child whose task has run past `--max-runtime`."""
        check_deadlines = now - self._last_deadline_check >= DEADLINE_CHECK_INTERVAL
        if check_deadlines:
            self._last_deadline_check = now
        for child in list(self._by_slot.values()):
            if child.sigkill_at is not None:
                child.escalate(now)
            if not child.process.is_alive():
                self._ended(child, replace=replace)
                continue
            if check_deadlines and child.inflight and child.kill_reason is None:
                self._enforce_deadline(child, now)

    def _enforce_deadline(self, child: ChildProcess, now: float) -> None:
        started = child.gate.started()
        if started is None:
            return
        n, start = started
        head = child.inflight[0]
        if n == head.n and now - start > self.max_runtime:
            log.warning(
                "task %s ran longer than %g s: killing child #%d",
                head.message.task_id,
                self.max_runtime,
                child.slot,
            )
            child.kill(KillReason.TIMEOUT, head.n, grace=TIMEOUT_KILL_GRACE, whole_tree=True)

    def _ended(self, child: ChildProcess, *, replace: bool) -> None:
        """A child is gone: read its last outcomes, settle its tasks, replace it."""
        self.take_outcomes(child, child.read_outcomes())
        exit_code = child.reap()
        child.alive = False
        started = child.gate.started(child_alive=False)
        running_n = started[0] if started else -1
        now = time.monotonic()
        to_release: list[Message] = []
        for entry in child.inflight:
            if entry.n != running_n:
                to_release.append(entry.message)
                continue
            elapsed = now - started[1] if started else 0.0
            if child.kill_reason is None:
                self.attempts.exited(entry.message, child.slot, child.pid, exit_code, elapsed)
                log.warning(
                    "task %s: child #%d exited with code %s",
                    entry.message.task_id,
                    child.slot,
                    exit_code,
                )
            elif child.kill_reason is KillReason.TIMEOUT and child.kill_target == entry.n:
                self.attempts.timed_out(
                    entry.message, child.slot, child.pid, elapsed, self.max_runtime
                )
            else:
                to_release.append(entry.message)
        child.inflight.clear()
        if to_release:
            self.leases.release(to_release)
        slot = child.slot
        self.discard(child)
        if replace:
            log.debug("replacing child #%d", slot)
            self.start()

    # -- stopping ---------------------------------------------------------------------------

    def stop_starting(self) -> list[Message]:
        """Let no child start another task; returns the messages of the tasks that will now
        never start (to give back at once). The running ones go on; each child's input is
        closed, so it exits after them."""
        unstarted: list[Message] = []
        for child in self._by_slot.values():
            if not child.alive:
                continue
            started = child.gate.stop_starting()
            if started is None:  # stuck holding its lock: stop it the hard way
                child.kill(KillReason.SHUTDOWN, grace=0)
                continue
            keep = [e for e in child.inflight if e.n <= started]
            unstarted.extend(e.message for e in child.inflight if e.n > started)
            child.inflight.clear()
            child.inflight.extend(keep)
            child.close_input()
        return unstarted

    def kill_running(self) -> None:
        """The grace period is over: kill every child still running a task."""
        for child in self._by_slot.values():
            if child.alive and child.inflight and child.kill_reason is None:
                child.kill(KillReason.SHUTDOWN, grace=0)

    def kill_all(self) -> list[Message]:
        """Kill every child now, take what outcomes they wrote, and return the messages of the
        tasks that are left unsettled (to give back)."""
        for child in self._by_slot.values():
            if child.alive:
                child.kill(KillReason.SHUTDOWN, grace=0)
        unsettled: list[Message] = []
        for child in list(self._by_slot.values()):
            child.process.join(5)
            self.take_outcomes(child, child.read_outcomes())
            unsettled.extend(e.message for e in child.inflight)
            child.inflight.clear()
            child.alive = False
        return unsettled
