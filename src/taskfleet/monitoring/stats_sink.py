"""An event sink that also keeps the statistics of what it wrote, for the runtime's own
end-of-run summary (the same figures as `taskfleet monitor`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskfleet.events.sinks import EventSink

if TYPE_CHECKING:
    from taskfleet.monitoring.statistics import EventStats
    from taskfleet.monitoring.summary import Summary


class StatsSink:
    """An event sink that also folds every event into `EventStats`, for the runtime's
    end-of-run summary (the same figures as `taskfleet monitor`).

    Events are folded when flushed, so the summary counts what was durably written, and the
    fold runs once per batch instead of once per event. `observer`, if given, is handed each
    flushed batch too (`LocalTaskQueue` takes its results from it rather than parsing the event
    log it has just written).
    """

    def __init__(
        self,
        inner: EventSink,
        stats: EventStats | None = None,
        observer: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.inner = inner
        self._stats = stats
        self.observer = observer
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def stats(self) -> EventStats:
        """Made when first needed (the first flush, after the first tasks are done), so that a
        worker starts its tasks without importing the statistics and msgspec."""
        if self._stats is None:
            from taskfleet.monitoring.statistics import EventStats

            self._stats = EventStats()
        return self._stats

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
            if self.observer is not None:
                self.observer(pending)

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
