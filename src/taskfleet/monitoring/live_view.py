"""What `monitor` shows while it runs: a rich live panel on a terminal, or one log line every
few seconds when the output goes to a file or a pipe (a live panel there would only write
escape codes into logs)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from taskfleet.events.schema import EventType
from taskfleet.monitoring.statistics import Summary
from taskfleet.monitoring.summary_text import seconds


def status_line(s: Summary) -> str:
    """One line with the figures that matter most while a job runs."""
    total = s.total_tasks
    percent = f" ({100.0 * s.tasks_completed / total:.1f}%)" if total else ""
    failed = sum(g.count for g in s.failures)
    rate = s.recent_rate if s.recent_rate is not None else s.completion_rate
    parts = [
        f"completed {s.tasks_completed:,}/{total:,}{percent}",
        f"not completed {s.tasks_not_completed:,}",
        f"failed attempts {failed:,}",
        f"dead letters {s.dead_letters:,}",
        f"more than once {s.tasks_completed_more_than_once:,}",
    ]
    parts += flow_facts(s)
    if rate:
        parts.append(f"{rate:,.2f} tasks/s")
    if s.tasks_not_completed and s.eta_seconds is not None:
        parts.append(f"ETA {seconds(s.eta_seconds)}")
    return ", ".join(parts)


def flow_facts(s: Summary) -> list[str]:
    """The tasks of a flow held back: waiting for their dependencies (when the queue says),
    and blocked behind a dead letter."""
    facts = []
    if s.waiting is not None:
        facts.append(f"waiting {s.waiting:,}")
    if s.blocked or s.waiting is not None:
        facts.append(f"blocked {s.blocked:,}")
    return facts


class LogView:
    """A status line on stderr every `every` seconds while following."""

    def __init__(self, stream: IO[str] | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0

    def __call__(self, summary: Summary, final: bool) -> None:
        now = time.monotonic()
        if final or now - self._last < self.every:
            return
        self._last = now
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} monitor: {status_line(summary)}", file=self.stream, flush=True)


def render(s: Summary, title: str) -> Any:
    """The live panel: progress, counts, elapsed times, failures, hosts, what is left."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    total = s.total_tasks
    done = s.tasks_completed
    head = Table.grid(padding=(0, 2))
    head.add_row(
        ProgressBar(total=max(total, 1), completed=done, width=40),
        Text(f"{done:,} / {total:,} completed" + (f"  {100 * done / total:.1f}%" if total else "")),
    )
    rate = s.recent_rate if s.recent_rate is not None else s.completion_rate
    facts = [f"not completed {s.tasks_not_completed:,}"]
    if rate:
        facts.append(f"rate {rate:,.2f} tasks/s")
    if s.tasks_not_completed and s.eta_seconds is not None:
        facts.append(f"ETA {seconds(s.eta_seconds)}")
    facts.append(f"dead letters {s.dead_letters:,}")
    facts += flow_facts(s)
    facts.append(f"completed more than once {s.tasks_completed_more_than_once:,}")
    if s.duplicate_events:
        facts.append(f"duplicate events {s.duplicate_events:,}")
    if s.unreadable_lines:
        facts.append(f"[red]unreadable lines {s.unreadable_lines:,}[/red]")

    events = Table(title="Events", title_justify="left", show_edge=False)
    events.add_column("type")
    events.add_column("count", justify="right")
    for event_type, count in s.event_counts.items():
        if event_type == EventType.TASK_COMPLETED:
            events.add_row("task_completed (retry=False)", f"{s.completed_retry_false:,}")
            if s.completed_retry_true:
                events.add_row("task_completed (retry=True)", f"{s.completed_retry_true:,}")
        else:
            events.add_row(str(event_type), f"{count:,}")

    e = s.elapsed
    elapsed = Table(title="Elapsed time", title_justify="left", show_edge=False)
    elapsed.add_column("")
    elapsed.add_column("", justify="right")
    if e.count:
        elapsed.add_row("min / max", f"{seconds(e.min)} / {seconds(e.max)}")
        elapsed.add_row("mean +/- sd", f"{seconds(e.mean)} +/- {seconds(e.sd)}")
        elapsed.add_row("median", seconds(e.median))
        elapsed.add_row(
            "p90 / p95 / p99", f"{seconds(e.p90)} / {seconds(e.p95)} / {seconds(e.p99)}"
        )

    top = Table.grid(padding=(0, 4))
    top.add_row(events, elapsed)
    parts: list[Any] = [Text(title, style="bold"), head, Text.from_markup("  ".join(facts)), top]

    if s.failures:
        failures = Table(title="Top failures", title_justify="left", show_edge=False)
        failures.add_column("kind")
        failures.add_column("count", justify="right")
        failures.add_column("example task")
        failures.add_column("message", overflow="ellipsis", no_wrap=True, max_width=60)
        for g in s.failures[:8]:
            message = (g.example_message or "").strip().splitlines()
            failures.add_row(
                g.kind, f"{g.count:,}", g.example_task_id or "", message[-1] if message else ""
            )
        parts.append(failures)

    if s.hosts:
        hosts = Table(title=f"Hosts ({len(s.hosts)})", title_justify="left", show_edge=False)
        for column in ("host", "events", "completed", "failed", "last sign of life"):
            hosts.add_column(column, justify="left" if column == "host" else "right")
        for h in sorted(s.hosts, key=lambda h: -h.events)[:10]:
            alive = h.last_seen[11:19] if h.last_seen else ""
            hosts.add_row(h.hostname, f"{h.events:,}", f"{h.completed:,}", f"{h.failed:,}", alive)
        parts.append(hosts)

    if s.tasks_not_completed_examples:
        more = s.tasks_not_completed - len(s.tasks_not_completed_examples)
        parts.append(
            Text(
                "Not completed: "
                + ", ".join(s.tasks_not_completed_examples)
                + (f" ... and {more:,} more" if more > 0 else "")
            )
        )
    return Group(*parts)


class LiveView:
    """A rich live panel redrawn on each call; it disappears at the end, where the final text
    summary takes its place."""

    def __init__(self, title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=True)
        self._started = False

    def __call__(self, summary: Summary, final: bool) -> None:
        if not self._started:
            self.live.start()
            self._started = True
        self.live.update(render(summary, self.title), refresh=True)
        if final:
            self.live.stop()
