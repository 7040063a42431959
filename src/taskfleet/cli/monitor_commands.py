"""Monitoring commands: `monitor` (live statistics from events) and `report` (HTML report)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import click

from taskfleet.cli import cli
from taskfleet.errors import TaskfleetError
from taskfleet.flows.layout import DEFAULT_GROUP_ABOVE
from taskfleet.queues import example_event_queues
from taskfleet.redact import redact


@cli.command("monitor")
@click.argument("events", nargs=-1, type=click.Path(dir_okay=False), metavar="[EVENTS_FILE]...")
@click.option(
    "--queue",
    "queue_url",
    metavar="URL",
    help="Task queue URL: drain its companion event queue ("
    + ", ".join(f"{url} -> {events}" for url, events in example_event_queues())
    + ").",
)
@click.option(
    "--event-queue", metavar="URL", help="Event queue URL to drain, instead of deriving it."
)
@click.option(
    "--output-file",
    "-o",
    type=click.Path(dir_okay=False),
    help="With --queue/--event-queue: append every event here (required; events already in "
    "the file are read first, so restarting the monitor loses and repeats nothing).",
)
@click.option(
    "--task-file",
    metavar="PATH|URL",
    help="Compare against this task list: progress, tasks not completed, tasks not listed.",
)
@click.option(
    "--flow-state",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="The state file of a `taskfleet flow run` (SQS, Pub/Sub), read-only, for the flow's "
    "waiting and blocked tasks (default: TASK_FILE.flow-state.db when it exists).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep reading the files as they grow.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.option(
    "--remaining-out",
    type=click.Path(dir_okay=False),
    help="Write the tasks of --task-file not completed as a task file (.json list, else JSONL).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Stop after this long without a new event (while following or draining a queue).",
)
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Stop once every task of --task-file is completed or dead-lettered.",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Seconds between updates while following: of the live view on a terminal (default "
    "1), of the status line otherwise (default 10).",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="How long a received event stays hidden from other readers; an event this monitor "
    "did not save in time (it was killed) comes back after it.",
)
def monitor(
    events: tuple[str, ...],
    queue_url: str | None,
    event_queue: str | None,
    output_file: str | None,
    task_file: str | None,
    flow_state: str | None,
    follow: bool,
    as_json: bool,
    remaining_out: str | None,
    idle_timeout: float | None,
    exit_when_done: bool,
    refresh: float | None,
    lease_seconds: float,
) -> None:
    """Show how far a job is: progress, failures, elapsed times, hosts.

    Reads events files (following them with --follow), or drains an event queue into
    --output-file. Stop a live monitor with Ctrl-C; the final summary is printed either way.

    \b
    Examples:
      taskfleet monitor events.jsonl
      taskfleet monitor events.jsonl --follow --task-file tasks.jsonl
      taskfleet monitor --queue sqlite:///job.db -o events.jsonl --task-file tasks.jsonl
      taskfleet monitor events.jsonl --json --task-file tasks.jsonl --remaining-out rerun.jsonl
      taskfleet monitor flow-events.jsonl -f --flow-state flow.json.flow-state.db   (SQS flow)
    """
    import orjson

    from taskfleet.monitoring.live_view import LiveView, LogView
    from taskfleet.monitoring.monitor import FileSource, MonitorOptions, QueueSource, run_monitor
    from taskfleet.monitoring.statistics import EventStats
    from taskfleet.monitoring.summary_text import counted, format_summary

    if (queue_url or event_queue) and events:
        raise TaskfleetError("give either events files or --queue/--event-queue, not both")
    if queue_url and event_queue:
        raise TaskfleetError("give --queue or --event-queue, not both")
    if not events and not (queue_url or event_queue):
        raise TaskfleetError(
            "nothing to monitor: give events files (taskfleet monitor events.jsonl) or a queue "
            "(taskfleet monitor --queue URL -o events.jsonl)"
        )
    if remaining_out and not task_file:
        raise TaskfleetError(
            "--remaining-out needs --task-file: the remaining tasks are copied from it, data "
            "and all"
        )
    if exit_when_done and not task_file:
        raise TaskfleetError("--exit-when-done needs --task-file to know when all are done")

    stats = EventStats()
    if task_file:
        from taskfleet.tasks import iter_tasks

        stats.expect(task.id for task in iter_tasks(task_file))

    if queue_url or event_queue:
        if not output_file:
            raise TaskfleetError(
                "draining an event queue removes the events from it: give --output-file so "
                "they are kept"
            )
        if event_queue is None:
            from taskfleet.queues import event_queue_url

            event_queue = event_queue_url(queue_url or "")
            _check_exists(queue_url or "", event_queue)
        if queue_url:
            stats.flow_counts = _flow_counts(queue_url)
            if stats.flow_counts is None:
                _refuse_draining_a_coordinated_flow(queue_url, flow_state, task_file)
            elif flow_state is not None:
                raise TaskfleetError(
                    f"{redact(queue_url)} counts its waiting and blocked tasks itself (without "
                    "--flow-state); --flow-state is for the flows `taskfleet flow run` "
                    "coordinates on sqs://, pubsub:// and fq://"
                )
        if stats.flow_counts is None and flow_state is not None:
            stats.flow_counts = _coordinated_counts(Path(flow_state))
        source = QueueSource(event_queue, output_file, lease_seconds=lease_seconds)
        previous = source.read_previous(stats)
        if previous:
            click.echo(f"read {previous:,} earlier events from {output_file}", err=True)
        follow = True
    else:
        if output_file:
            raise TaskfleetError("--output-file is for --queue/--event-queue")
        if not follow:
            for path in events:
                if not Path(path).exists():
                    raise TaskfleetError(f"{path}: the events file does not exist. Check the path.")
        from taskfleet.flows.flow_status import find_flow_state

        state_path = find_flow_state(flow_state, task_file)
        if state_path is not None:
            stats.flow_counts = _coordinated_counts(state_path)
        source = FileSource(events, stats)
        missing = source.missing()
        if missing:
            click.echo(f"waiting for {', '.join(missing)} to appear", err=True)

    interactive = sys.stdout.isatty() and not as_json
    show = None
    if follow:
        title = f"taskfleet monitor: {source.describe()}"
        if interactive:
            show = LiveView(title)
        else:
            click.echo(f"monitoring {source.describe()}", err=True)
            show = LogView(every=refresh or 10.0)
    options = MonitorOptions(
        follow=follow,
        idle_timeout=idle_timeout,
        exit_when_done=exit_when_done,
        refresh=refresh or 1.0,
    )
    summary, interrupted = run_monitor(source, stats, options, show)

    if remaining_out and task_file:
        from taskfleet.monitoring.monitor import write_remaining

        written = write_remaining(task_file, stats, remaining_out)
        click.echo(f"wrote {counted(written, 'task')} not completed to {remaining_out}", err=True)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    else:
        click.echo(format_summary(summary))
    if interrupted:
        raise SystemExit(130)


@cli.command("report")
@click.argument("events", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--output",
    "-o",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The HTML file to write (self-contained: opens offline).",
)
@click.option("--png", type=click.Path(dir_okay=False), help="Also write the timeline as a PNG.")
@click.option(
    "--task-file",
    metavar="PATH|URL",
    help="Compare against this task list; when its tasks wait for others ('after'), the "
    "report also draws the flow, each task coloured by its state.",
)
@click.option("--title", help="Title of the report.")
@click.option(
    "--max-bars",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Above this many task attempts the timeline shows a sample (it says so).",
)
@click.option(
    "--group-above",
    type=click.IntRange(min=0),
    default=DEFAULT_GROUP_ABOVE,
    show_default=True,
    help="Flow graph: above this many tasks, tasks with the same dependencies and dependents "
    "are drawn as one box (coloured in proportion to their states).",
)
def report(
    events: tuple[str, ...],
    output: str,
    png: str | None,
    task_file: str | None,
    title: str | None,
    max_bars: int,
    group_above: int,
) -> None:
    """Write an HTML report of one or more events files: timeline per worker process,
    throughput, elapsed-time histogram, failures and summary.

    \b
    Examples:
      taskfleet report events.jsonl -o report.html
      taskfleet report host-*/events.jsonl -o report.html --png timeline.png
      taskfleet report events.jsonl --task-file flow.json -o report.html   (draws the flow)
    """
    from taskfleet.monitoring.report import build_report

    data = build_report(
        events,
        output,
        png=png,
        max_bars=max_bars,
        title=title,
        task_file=task_file,
        group_above=group_above,
    )
    note = ""
    if data.sampled:
        note = f" (timeline: {len(data.shown):,} of {len(data.attempts):,} attempts sampled)"
    click.echo(f"wrote {output}{note}" + (f" and {png}" if png else ""), err=True)


def _flow_counts(queue_url: str) -> Callable[[], tuple[int | None, int | None]] | None:
    """What the monitor asks the task queue at each refresh: its waiting and blocked tasks,
    where the queue keeps the dependency state of a flow (None elsewhere: the events' view)."""
    from taskfleet.queues import QueueNotFoundError, open_queue

    try:
        queue = open_queue(queue_url, create=False)
    except QueueNotFoundError:
        return None
    if not queue.tracks_dependencies:
        queue.close()
        return None

    def counts() -> tuple[int | None, int | None]:
        stats = queue.stats()
        return stats.waiting, stats.blocked

    return counts


def _coordinated_counts(state_path: Path) -> Callable[[], tuple[int | None, int | None]]:
    """What the monitor asks a coordinated flow's state file at each refresh (read-only;
    checked once here, so a wrong file is one line before anything is shown)."""
    from taskfleet.flows.flow_status import held_tasks, open_flow_state

    state = open_flow_state(state_path)

    def counts() -> tuple[int | None, int | None]:
        held = held_tasks(state)
        return held.waiting, held.blocked

    return counts


def _refuse_draining_a_coordinated_flow(
    queue_url: str, flow_state: str | None, task_file: str | None
) -> None:
    """`taskfleet flow run` consumes the event queue of the queue it coordinates: a monitor
    draining it too would take completions the coordinator waits for, and the flow would
    stall. So where this queue's flow state is known, say what to follow instead."""
    from taskfleet.flows.flow_status import find_flow_state, open_flow_state, same_queue

    state_path = find_flow_state(flow_state, task_file)
    if state_path is None:
        return
    # A wrong file, or a given one of another queue: its own line.
    state = open_flow_state(state_path, queue_url if flow_state is not None else None)
    try:
        recorded = state.meta("queue") or ""
    finally:
        state.close()
    if not same_queue(recorded, queue_url):
        return  # the task file's flow runs on another queue: this one is free to drain
    raise TaskfleetError(
        f"{redact(queue_url)}: `taskfleet flow run` coordinates this flow ({state_path}) and "
        "consumes the queue's event queue; draining it here would take the completions it "
        "waits for. Follow the events file it writes (its --events-file) instead: taskfleet "
        f"monitor EVENTS_FILE --follow --flow-state {shlex.quote(str(state_path))}"
    )


def _check_exists(queue_url: str, event_queue: str) -> None:
    """Refuse a task queue that does not exist, unless its event queue does: a mistyped one
    would be watched forever. The event queue may not exist yet (workers create it with their
    first event), and events may outlive their task queue."""
    from taskfleet.queues import QueueNotFoundError, open_queue

    try:
        open_queue(queue_url, create=False).close()
    except QueueNotFoundError:
        try:
            open_queue(event_queue, create=False).close()
        except QueueNotFoundError:
            pass
        else:
            return
        raise
