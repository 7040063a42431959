"""The runtime's own events: started, stopped, a termination notice, errors it survives or not.

A task's events are written by the attempt owner (`attempts.py`); the events about the worker
itself go through here, so that every call site names its `EventType` and the envelope is built
by `make_event` with the hostname looked up once.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from taskfleet.events.schema import EventType, make_event
from taskfleet.events.sinks import EventSink

log = logging.getLogger("taskfleet.worker")


class RunEvents:
    """Writes the worker's own events to the run's sink."""

    def __init__(self, sink: EventSink, hostname: str) -> None:
        self.sink = sink
        self.hostname = hostname

    def emit(self, event_type: EventType, **fields: Any) -> None:
        self.sink.emit(make_event(event_type, hostname=self.hostname, **fields))

    def non_fatal(self, exc: BaseException, doing: str) -> None:
        """An error the worker survives (a queue call failed; it tries again later)."""
        log.warning("error while %s: %s: %s", doing, type(exc).__name__, exc)
        self.emit(
            EventType.NON_FATAL_EXCEPTION,
            exception=f"{type(exc).__name__}: {exc} (while {doing})",
            stack_trace=traceback.format_exc(),
        )

    def fatal(self, exc: BaseException) -> None:
        """The error that ends the run."""
        self.emit(
            EventType.FATAL_EXCEPTION,
            exception=f"{type(exc).__name__}: {exc}",
            stack_trace=traceback.format_exc(),
        )
