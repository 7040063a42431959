"""The summary as plain text: what `monitor` prints at the end and the runtime at the end of a
run. It has the content of rms-cloud-tasks' monitor summary (tasks not completed, tasks
completed more than once, events by type and retry flag, completion time and rate, elapsed-time
figures, the remaining tasks), plus dead letters, p99, failures by type and hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskfleet.events.schema import EventType

if TYPE_CHECKING:
    from taskfleet.monitoring.summary import FailureGroup, Summary


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """'1 task', '2 tasks', '10,000 tasks': a count with its noun in the right number."""
    return f"{number:,} {noun if number == 1 else (plural or noun + 's')}"


def seconds(value: float | None) -> str:
    """A duration for people: '0.042 s', '12.35 s', '1 h 02 min'."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f} s"
    if value < 120:
        return f"{value:.2f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def _ids(ids: list[str], total: int) -> str:
    if not ids:
        return ""
    more = f", ... ({total - len(ids):,} more)" if total > len(ids) else ""
    return ": " + ", ".join(ids) + more


def _groups(lines: list[str], title: str, groups: list[FailureGroup], limit: int) -> None:
    if not groups:
        return
    lines.append(f"  {title}:")
    width = max(len(g.kind) for g in groups[:limit])
    for g in groups[:limit]:
        example = f"  e.g. task {g.example_task_id}" if g.example_task_id else ""
        message = ""
        if g.example_message and g.example_message != g.kind:
            message = ": " + g.example_message.strip().splitlines()[-1][:100]
        lines.append(f"    {g.kind:<{width}}  {g.count:>9,}{example}{message}")
    if len(groups) > limit:
        lines.append(f"    ... {counted(len(groups) - limit, 'more kind')}")


def format_summary(
    s: Summary, *, failures: int = 10, queued: int | None = None, dead: int = 0
) -> str:
    """The summary as text. A worker's own summary covers only its run's events, so it gives
    what its queue still holds (`queued` tasks to run, `dead` dead letters): the tasks not
    completed are those, not only the ones this run's events mention."""
    lines = ["Summary:"]
    if s.tasks_in_task_file is not None:
        lines.append(
            f"  Tasks in the task file: {s.tasks_in_task_file:,}; completed: "
            f"{s.tasks_completed:,}; not completed: {s.tasks_not_completed:,}"
        )
        if s.tasks_not_in_task_file:
            lines.append(
                f"  Tasks in events but not in the task file: {s.tasks_not_in_task_file:,}"
            )
    elif queued is not None:
        lines.append(
            f"  Tasks in this run's events: {s.tasks_seen:,}; completed: {s.tasks_completed:,}"
        )
    else:
        lines.append(
            f"  Tasks seen in events: {s.tasks_seen:,}; completed: {s.tasks_completed:,}; "
            f"not completed: {s.tasks_not_completed:,}"
        )
    lines.append(
        f"  Completed more than once (delivered again): {s.tasks_completed_more_than_once:,}"
        + _ids(s.tasks_completed_more_than_once_examples, s.tasks_completed_more_than_once)
    )
    lines.append(
        f"  Dead letters: {s.dead_letters:,}" + _ids(s.dead_letter_examples, s.dead_letters)
    )
    if s.waiting is not None:
        lines.append(f"  Waiting for the tasks they depend on: {s.waiting:,}")
    if s.blocked or s.waiting is not None:
        lines.append(f"  Blocked behind a dead letter (run after a redrive): {s.blocked:,}")

    lines.append(f"  Events by type ({counted(s.events, 'event')}):")
    rows: list[tuple[str, int]] = []
    for event_type, count in s.event_counts.items():
        if event_type == EventType.TASK_COMPLETED:
            if s.completed_retry_false:
                rows.append(("task_completed (retry=False)", s.completed_retry_false))
            if s.completed_retry_true:
                rows.append(("task_completed (retry=True)", s.completed_retry_true))
        else:
            rows.append((str(event_type), count))
    width = max((len(name) for name, _ in rows), default=0)
    for name, count in rows:
        lines.append(f"    {name:<{width}}  {count:>9,}")
    if s.duplicate_events:
        lines.append(f"    duplicate events ignored: {s.duplicate_events:,}")
    if s.unreadable_lines:
        lines.append(f"    unreadable lines skipped: {s.unreadable_lines:,}")
        for example in s.unreadable_examples:
            lines.append(f"      {example}")

    if s.span_seconds is not None and s.tasks_completed:
        running = s.span_seconds - s.paused_seconds
        per_task = running / s.tasks_completed
        rate = s.completion_rate or 0.0
        pauses = (
            f"; {seconds(s.paused_seconds)} between runs not counted" if s.paused_seconds else ""
        )
        lines.append(
            f"  Completed {counted(s.tasks_completed, 'task')} in {seconds(running)} "
            f"({rate:,.2f} tasks/s, {per_task:.3g} s/task{pauses})"
        )
    if s.tasks_not_completed and s.eta_seconds is not None and s.recent_rate is not None:
        # Only while following: a rate from the last minute says the job is still running.
        lines.append(
            f"  Recent rate {s.recent_rate or 0:,.2f} tasks/s; estimated time to finish: "
            f"{seconds(s.eta_seconds)}"
        )

    e = s.elapsed
    if e.count:
        lines.append(f"  Elapsed time per task ({counted(e.count, 'completion')}):")
        lines.append(f"    Range:   {seconds(e.min)} to {seconds(e.max)}")
        lines.append(f"    Mean:    {seconds(e.mean)} +/- {seconds(e.sd)}")
        lines.append(f"    Median:  {seconds(e.median)}")
        lines.append(f"    p90:     {seconds(e.p90)}")
        lines.append(f"    p95:     {seconds(e.p95)}")
        lines.append(f"    p99:     {seconds(e.p99)}")

    _groups(lines, "Failures by type", s.failures, failures)
    _groups(lines, "Worker errors", s.worker_errors, failures)

    if s.hosts:
        lines.append(f"  Hosts ({len(s.hosts)}):")
        width = max(len(h.hostname) for h in s.hosts)
        for h in s.hosts[:50]:
            alive = (
                f"  last sign of life {h.last_seen[:19].replace('T', ' ')}" if h.last_seen else ""
            )
            lines.append(
                f"    {h.hostname:<{width}}  {h.events:>9,} events  {h.completed:>9,} completed"
                f"  {h.failed:>7,} failed{alive}"
            )
        if len(s.hosts) > 50:
            lines.append(f"    ... {counted(len(s.hosts) - 50, 'more host')}")

    if queued is not None:
        lines.append(
            f"  Not completed: {queued + dead:,} ({queued:,} still queued, "
            f"{counted(dead, 'dead letter')})"
        )
    else:
        lines.append(
            f"  Not completed: {s.tasks_not_completed:,}"
            + _ids(s.tasks_not_completed_examples, s.tasks_not_completed)
        )
    return "\n".join(lines)
