"""An event sink that also keeps the statistics of what it wrote, for the runtime's own
end-of-run summary (the same figures as `taskfleet monitor`)."""

from __future__ import annotations

import threading
from typing import Any

from taskfleet.events.sinks import EventSink
from taskfleet.monitoring.statistics import EventStats
from taskfleet.monitoring.summary import Summary


class StatsSink:
    """An event sink that also folds every event into `EventStats`, for the runtime's
    end-of-run summary (the same figures as `taskfleet monitor`).

    Events are folded when flushed, so the summary counts what was durably written, and the
    fold runs once per batch (about 1 µs an event) instead of once per event.
    """

    def __init__(self, inner: EventSink, stats: EventStats | None = None) -> None:
        self.inner = inner
        self.stats = stats if stats is not None else EventStats()
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.inner.emit(event)
            self._pending.append(event)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        try:
            self.inner.flush()  # makes `pending` (and maybe later events) durable
        except BaseException:
            with self._lock:
                self._pending[:0] = pending
            raise
        if pending:
            self.stats.add_all(pending)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.inner.close()

    def summary(self) -> Summary:
        return self.stats.summary()

    def __enter__(self) -> StatsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
