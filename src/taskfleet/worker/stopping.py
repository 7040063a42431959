"""How a run stops: why (`StopReason`), signals, termination notices, the grace period, kills.

A stop is decided once and carried out over the following turns of the loop. The first
SIGINT/SIGTERM/SIGHUP, or a spot/preemption notice, stops leasing, gives prefetched tasks back
at once and lets running tasks finish within the grace period, after which their children are
killed and their tasks given back; a second signal kills everything at once. A run also stops
when its work is over (`done`, `idle`, `limit`, decided by the dispatch); then running tasks
simply finish. A service that stays away longer than `--outage-seconds` (`outage.py`) ends it
at once (`outage`): no outcome could be recorded, so the children are killed and every task
not settled is given back, or comes back when its lease expires.

SIGHUP (the terminal or SSH session went away) is a SIGTERM: a worker must not die at once
holding leases it could give back. `STOP_SIGNALS` are the signals that ask a run to stop.
Before the loop runs (opening the state, loading a task file) there is nothing to finish, so
any of them interrupts at once, as Ctrl-C does: what was being written is rolled back, and
`Worker.run` ends with one line and exit code 130.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from taskfleet._compat import StrEnum
from taskfleet.events.schema import EventType
from taskfleet.worker.attempts import Attempts
from taskfleet.worker.children import Children
from taskfleet.worker.leases import Leases
from taskfleet.worker.run_events import RunEvents
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.shared_memory import SharedFlags

log = logging.getLogger("taskfleet.worker")

# The signals that ask a run to stop: gracefully the first time, at once the second.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopReason(StrEnum):
    """Why a run stops: the `reason` of its `worker_stopped` event."""

    SIGNAL = "signal"  # Ctrl-C, SIGTERM or SIGHUP
    SPOT = "spot"  # a spot/preemption notice
    DONE = "done"  # a local run finished its tasks
    IDLE = "idle"  # the queue stayed empty for --exit-when-idle
    LIMIT = "limit"  # --max-num-tasks were received
    OUTAGE = "outage"  # the queue or the event log stayed away past --outage-seconds

    @property
    def interrupts(self) -> bool:
        """Stopped from outside, before the work was over."""
        return self in (StopReason.SIGNAL, StopReason.SPOT)


class Stopping:
    """Decides that the run stops, and stops it: gently first, at once if it must."""

    def __init__(
        self,
        children: Children,
        leases: Leases,
        attempts: Attempts,
        events: RunEvents,
        flags: SharedFlags,
        settings: WorkerSettings,
        termination_check: Callable[[], bool] | None,
    ) -> None:
        self.children = children
        self.leases = leases
        self.attempts = attempts
        self.events = events
        self.flags = flags
        self.settings = settings
        self.termination_check = termination_check
        self.reason: StopReason | None = None
        self.signals = 0
        self.abort = False  # stop at once: a second signal
        self.begun = False
        self.kill_deadline: float | None = None
        self._notice_seen = False

    @property
    def interrupted(self) -> bool:
        return self.abort or (self.reason is not None and self.reason.interrupts)

    # -- deciding ---------------------------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        """Stop for `reason`, unless a stop was decided already."""
        if self.reason is None:
            self.reason = reason

    def request_stop(self) -> None:
        """First Ctrl-C/SIGTERM/SIGHUP: graceful stop; a second one (any): stop at once."""
        self.signals += 1
        if self.signals >= 2:
            self.abort = True
        else:
            self.stop(StopReason.SIGNAL)

    def check_termination_notice(self) -> None:
        """A spot/preemption notice stops the run as a signal does, and tells every task."""
        if self._notice_seen or self.termination_check is None:
            return
        if self.termination_check():
            self._notice_seen = True
            self.flags.set_termination_notice()
            self.events.emit(EventType.SPOT_TERMINATION)
            log.warning("termination notice received: no new tasks; finishing running ones")
            self.stop(StopReason.SPOT)

    # -- carrying it out --------------------------------------------------------------------

    def begin(self) -> None:
        """Stop leasing, give back prefetched tasks at once, let running ones finish."""
        self.begun = True
        if self.reason is not None and self.reason.interrupts:
            self.flags.set_shutdown_requested()
            delay = self.settings.shutdown_grace_period
            if (
                self.reason is StopReason.SPOT
                and self.settings.simulate_spot_termination_delay is not None
            ):
                delay = self.settings.simulate_spot_termination_delay
            self.kill_deadline = time.monotonic() + delay
            log.info(
                "stopping (%s): no new tasks; running tasks have %.0f s to finish",
                "signal" if self.reason is StopReason.SIGNAL else "termination notice",
                delay,
            )
        unstarted = self.children.stop_starting()
        if unstarted:
            self.leases.release(unstarted)

    def enforce_grace(self, now: float) -> None:
        """Once the grace period is over, kill the children still running tasks."""
        if self.kill_deadline is not None and now >= self.kill_deadline:
            self.children.kill_running()

    def grace_over(self, now: float) -> bool:
        """A signal or notice stopped the run, and its grace period is over."""
        return self.kill_deadline is not None and now >= self.kill_deadline

    def abandon(self) -> None:
        """A service is away and the run must end anyway (it stayed away past
        `--outage-seconds`, or a stop's grace period is over): kill every child now, forget
        the outcomes that could not be recorded, and give their tasks back if the queue
        answers (otherwise their leases expire and they come back then)."""
        self.stop(StopReason.OUTAGE)
        self.begun = True
        self.flags.set_shutdown_requested()
        unsettled = self.children.kill_all()
        unsettled.extend(self.attempts.abandon())
        if unsettled:
            self.leases.release(unsettled)

    def kill_everything(self) -> None:
        """Second signal or fatal error: kill every child now and give back every task."""
        unsettled = self.children.kill_all()
        if self.attempts.pending:
            with contextlib.suppress(Exception):
                self.attempts.settle()
        if unsettled:
            self.leases.release(unsettled)


def install_signal_handlers(stopping: Stopping) -> Callable[[], None]:
    """`STOP_SIGNALS` ask the run to stop; returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        stopping.request_stop()
        if stopping.signals == 1:
            log.warning(
                "%s: finishing running tasks (up to %.0f s); press Ctrl-C again to stop at once",
                signal.Signals(signum).name,
                stopping.settings.shutdown_grace_period,
            )

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@contextlib.contextmanager
def interrupt_on_stop_signals() -> Iterator[None]:
    """While nothing runs yet, any of `STOP_SIGNALS` raises `KeyboardInterrupt` (its argument
    is the signal's name), which unwinds what was being written; old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
