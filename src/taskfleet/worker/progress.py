"""Progress while a worker runs: a live bar on a terminal, else a log line every few seconds.

rich draws the bar, and is imported only when there is a terminal to draw on: a worker whose
output goes to a file or a pipe (a VM, a batch job, a benchmark) starts without it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from taskfleet.monitoring.summary_text import counted

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("taskfleet.worker")

LOG_INTERVAL = 5.0
REFRESH_INTERVAL = 0.2


class ProgressView:
    """Shows done/total, failures, running tasks, rate and ETA."""

    def __init__(self, total: int | None, done_before: int, *, live: bool | None = None) -> None:
        self.total = total
        self.done_before = done_before
        self.live = sys.stderr.isatty() if live is None else live
        self.started = time.monotonic()
        self._last = 0.0
        self._progress: Progress | None = None
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]tasks"),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn(
                    "{task.fields[failed]} failed, {task.fields[running]} running, "
                    "{task.fields[rate]}/s"
                ),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stderr=True,
                redirect_stdout=True,
                transient=False,
            )
            self._bar = self._progress.add_task(
                "tasks", total=total, completed=done_before, failed=0, running=0, rate="0"
            )
            self._progress.start()

    def update(self, counts: Any, running: int, force: bool = False) -> None:
        now = time.monotonic()
        interval = REFRESH_INTERVAL if self.live else LOG_INTERVAL
        if not force and now - self._last < interval:
            return
        self._last = now
        done = self.done_before + counts.finished
        elapsed = max(now - self.started, 1e-9)
        rate = counts.finished / elapsed
        if self._progress is not None:
            self._progress.update(
                self._bar,
                completed=done,
                failed=counts.failed_attempts,
                running=running,
                rate=f"{rate:,.1f}",
            )
            return
        total = f"/{self.total:,}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(0, self.total - done) / rate:,.0f} s"
        log.info(
            "progress: %s%s done, %s, %s running, %.1f tasks/s%s",
            f"{done:,}",
            total,
            counted(counts.failed_attempts, "failed attempt"),
            running,
            rate,
            eta,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
