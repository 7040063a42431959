"""The figures a summary holds (`Summary` and its parts) and the small numeric helpers behind
them: what `taskfleet monitor`, the runtime's end-of-run summary and `taskfleet report` show.
`taskfleet.monitoring.statistics.EventStats` computes them from events."""

from __future__ import annotations

import math
import operator
import re
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

_EXCEPTION_TYPE = re.compile(r"^([A-Za-z_][\w.]*)(?::|\(|$)")


def exception_type(text: str | None) -> str:
    """The exception type named at the start of an `exception` field ("ValueError: bad x" ->
    "ValueError"); text that names no type is kept whole (shortened) so it still groups."""
    if not text:
        return "(no message)"
    m = _EXCEPTION_TYPE.match(text)
    if m:
        return m.group(1)
    first = text.strip().splitlines()[0] if text.strip() else text
    return first[:80]


_NUMPY_FROM = 200_000  # below this, importing numpy costs about what it saves


def summarize_elapsed(elapsed: array[float]) -> ElapsedSummary:
    """Count, range, mean, population standard deviation and percentiles (interpolating
    between closest ranks, numpy's default) of elapsed times."""
    n = len(elapsed)
    if n == 0:
        return ElapsedSummary(count=0)
    if n >= _NUMPY_FROM:
        fast = _elapsed_summary_numpy(elapsed)
        if fast is not None:
            return fast
    values = sorted(elapsed)
    mean = math.fsum(values) / n
    # E[x^2] - mean^2 with exact (fsum) sums: one C-speed pass; the cancellation it risks
    # matters only when sd/mean < 1e-8, far below what elapsed times show.
    variance = max(0.0, math.fsum(map(operator.mul, values, values)) / n - mean * mean)
    return ElapsedSummary(
        count=n,
        min=values[0],
        max=values[-1],
        mean=mean,
        sd=math.sqrt(variance),
        median=percentile(values, 50),
        p90=percentile(values, 90),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
    )


def _elapsed_summary_numpy(elapsed: array[float]) -> ElapsedSummary | None:
    """The same figures with numpy, when it is installed: sorting millions of values is ~10x
    faster than `sorted` (numpy is optional; the pure-Python path gives the same numbers)."""
    try:
        import numpy as np
    except ImportError:
        return None
    values = np.array(elapsed, dtype=np.float64)  # a copy: `elapsed` may still grow
    values.sort()
    p50, p90, p95, p99 = (float(x) for x in np.percentile(values, [50, 90, 95, 99]))
    return ElapsedSummary(
        count=len(values),
        min=float(values[0]),
        max=float(values[-1]),
        mean=float(values.mean()),
        sd=float(values.std()),
        median=p50,
        p90=p90,
        p95=p95,
        p99=p99,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of sorted values, interpolating between closest ranks."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = (n - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass
class ElapsedSummary:
    """Elapsed-time figures of completed attempts, in seconds (None when there are none)."""

    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    sd: float | None = None
    median: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass
class FailureGroup:
    """Failed attempts of one kind: an exception type, a timeout or an exit code."""

    kind: str
    count: int
    example_task_id: str | None
    example_message: str | None
    example_timestamp: str | None


@dataclass
class HostSummary:
    """Events, completions and failed attempts of one host, and its last sign of life (the
    timestamp of its newest worker event: `keep_alive`, `worker_started`, ...)."""

    hostname: str
    events: int
    completed: int
    failed: int
    last_seen: str | None = None


@dataclass
class Summary:
    """Everything `monitor` shows; `as_dict()` is the `--json` output."""

    events: int
    duplicate_events: int
    unreadable_lines: int
    unreadable_examples: list[str]
    event_counts: dict[str, int]
    completed_retry_false: int
    completed_retry_true: int
    tasks_in_task_file: int | None
    tasks_seen: int
    tasks_completed: int
    tasks_not_completed: int
    tasks_not_completed_examples: list[str]
    tasks_completed_more_than_once: int
    tasks_completed_more_than_once_examples: list[str]
    tasks_not_in_task_file: int
    dead_letters: int
    dead_letter_examples: list[str]
    first_event: str | None
    last_event: str | None
    span_seconds: float | None
    paused_seconds: float  # of the span, while no worker ran between two runs
    completion_rate: float | None  # tasks per second while workers ran (the span less pauses)
    recent_rate: float | None  # tasks per second over the last minute of events
    eta_seconds: float | None
    elapsed: ElapsedSummary
    failures: list[FailureGroup] = field(default_factory=list)
    worker_errors: list[FailureGroup] = field(default_factory=list)
    hosts: list[HostSummary] = field(default_factory=list)
    #: tasks of a flow held behind a dead letter (their `task_blocked` events, less those
    #: completed since or whose failed dependency completed since; the queue's own count
    #: where the monitor reads the queue)
    blocked: int = 0
    #: tasks held until their dependencies complete, from the queue's counts (None: unknown,
    #: events alone cannot tell)
    waiting: int | None = None

    @property
    def total_tasks(self) -> int:
        """The task count progress is measured against."""
        if self.tasks_in_task_file is not None:
            return self.tasks_in_task_file
        return self.tasks_seen

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_tasks"] = self.total_tasks
        for key, value in list(data.items()):
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        return data


def failure_groups(source: dict[str, list[Any]]) -> list[FailureGroup]:
    """Failures grouped by kind (`kind -> [count, hosts, first, example message]`, as the fold
    keeps them), most frequent first, each example message cut to 500 characters."""
    rows = [
        FailureGroup(kind, g[0], g[2], None if g[3] is None else str(g[3])[:500], g[1] or None)
        for kind, g in source.items()
    ]
    rows.sort(key=lambda r: (-r.count, r.kind))
    return rows
