"""Queue commands: load-queue, status, purge, release-all, dead-letters, redrive."""

from __future__ import annotations

import dataclasses
import json

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskfleet.cli import cli
from taskfleet.errors import TaskfleetError
from taskfleet.monitoring.summary_text import counted
from taskfleet.queues import Queue, SendInterrupted, example_urls, open_queue
from taskfleet.queues.base import DataChanges, QueueStats
from taskfleet.redact import redact
from taskfleet.tasks.load_retry import load_riding_out, outage_seconds_from_env
from taskfleet.tasks.loading import stop_on_first_interrupt

out = Console(highlight=False)

queue_option = click.option(
    "--queue",
    "queue_url",
    envvar="TASKFLEET_QUEUE",
    required=True,
    metavar="URL",
    help=f"Queue URL: {', '.join(example_urls())} [env TASKFLEET_QUEUE].",
)


def open_existing_queue(queue_url: str) -> Queue:
    """Open a queue that must exist already: a mistyped path is an error, not a new, empty
    queue that answers "0 tasks"."""
    return open_queue(queue_url, create=False)


@cli.command("load-queue")
@queue_option
@click.option(
    "--task-file", required=True, metavar="PATH|URL|-", help="JSON, JSONL, YAML or .flow task file."
)
@click.option("--skip", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--limit", default=None, type=click.IntRange(min=0), help="Load at most N tasks.")
@click.option(
    "--max-attempts",
    default=None,
    type=click.IntRange(min=1),
    help="Attempts before a task is dead-lettered; fixed when the queue is created (default 3).",
)
@click.option(
    "--update",
    is_flag=True,
    help="Tasks already in the queue and not completed take the file's data (dead letters too: "
    "`taskfleet redrive` then runs them with it); completed ones are left as they were. On SQS "
    "and Pub/Sub only the dead letters change, and nothing else is sent.",
)
def load_queue(
    queue_url: str,
    task_file: str,
    skip: int,
    limit: int | None,
    max_attempts: int | None,
    update: bool,
) -> None:
    """Load tasks from a task file into a queue. Loading the same file twice is safe: tasks
    already present are skipped and counted (with --update, they take the file's data).

    \b
    Example:
      taskfleet load-queue --queue sqlite:///job.db --task-file tasks.jsonl
    """
    queue = open_queue(queue_url, max_attempts=max_attempts)
    try:
        if not queue.shared_between_processes:
            raise TaskfleetError(
                f"{redact(queue_url)} lives only inside one Python process, so a command "
                "cannot load it for others; send tasks to it from the process that uses it"
            )
        if max_attempts is not None and queue.max_attempts != max_attempts:
            click.echo(
                f"note: the queue already exists with max attempts {queue.max_attempts}; "
                f"--max-attempts {max_attempts} applies only to a new queue",
                err=True,
            )
        if update and not queue.updates_data:
            raise TaskfleetError(
                f"{redact(queue_url)}: this kind of queue cannot give tasks already loaded new "
                "data; load the changed tasks under new ids, or into a new queue"
            )
        progress = Progress(
            TextColumn("loading"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed:,} tasks"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with progress, stop_on_first_interrupt() as stop:
            bar = progress.add_task("load", total=limit)

            try:
                result = load_riding_out(
                    queue,
                    task_file,
                    skip=skip,
                    limit=limit,
                    on_progress=lambda n: progress.update(bar, completed=n),
                    update=update,
                    outage_seconds=outage_seconds_from_env(),
                    notify=lambda line: progress.console.print(redact(line), markup=False),
                    stop=stop,
                )
            except SendInterrupted as exc:
                if isinstance(exc.cause, KeyboardInterrupt):
                    click.echo(_stopped_load_message(queue, exc.inserted), err=True)
                    raise SystemExit(130) from None
                raise TaskfleetError(_interrupted_load_message(queue, exc)) from None
            except TaskfleetError as exc:
                raise TaskfleetError(_interrupted_load_message(queue, exc)) from None
            except KeyboardInterrupt:
                click.echo(_stopped_load_message(queue, 0), err=True)
                raise SystemExit(130) from None
        note = queue.load_note()
        # An update on SQS or Pub/Sub replaces dead letters only: `update_lines` says so, and
        # an "accepted 0" line with a note about duplicates would only confuse.
        only_dead_letters = update and (result.changes.not_sent or note is not None)
        if not only_dead_letters:
            if note is None:
                inserted = f"inserted {result.inserted:,}"
                out.print(f"{inserted}, already present {result.already_present:,}")
            else:
                out.print(f"accepted {result.inserted:,} ({note})")
        if update:
            for line in update_lines(result.changes):
                out.print(line)
    finally:
        queue.close()


def update_lines(changes: DataChanges) -> list[str]:
    """What `load-queue --update` changed, in words: the tasks that took the new data, and
    those the queue could not compare (see `Queue.send_updates`)."""
    lines = [
        f"new data: {changes.updated:,} waiting, {changes.dead_updated:,} dead letters "
        f"(`taskfleet redrive` runs them with it); {changes.completed_changed:,} "
        "completed differ from the file and were left as they were"
    ]
    if changes.completed_unknown:
        lines.append(
            f"not compared: {counted(changes.completed_unknown, 'completed task')}, left as "
            "they were (this queue keeps no data of completed tasks)"
        )
    if changes.not_sent:
        lines.append(
            f"not sent: {counted(changes.not_sent, 'task')} of the file that are not dead "
            "letters (this queue cannot read the tasks it holds, so it cannot tell a new task "
            "from a queued one: load new tasks without --update, from a file of their own)"
        )
    return lines


def _stopped_load_message(queue: Queue, sent: int) -> str:
    """What a load stopped by Ctrl-C left in the queue."""
    if sent == 0:
        return "interrupted: nothing from this file was inserted"
    again = _load_again(queue, "loading again skips them")
    return f"interrupted: {sent:,} tasks from this file were sent before Ctrl-C; {again}"


def _load_again(queue: Queue, skips: str) -> str:
    """What loading the same file again does to the tasks a stopped load sent (`skips` where
    the queue skips tasks it holds)."""
    if queue.idempotent_send:
        return skips
    return (
        "loading the file again sends them a second time (this queue does not skip tasks it "
        "holds; workers then run them twice, and the monitor counts the repeats)"
    )


def _interrupted_load_message(queue: Queue, exc: TaskfleetError) -> str:
    """The error that stopped a load, and what it left in the queue.

    A rerun after the fix is always safe (inserts are idempotent); what differs is whether the
    queue now holds part of the file: nothing for a transactional backend (SQLite), an exact
    count from a backend that follows the `SendInterrupted` contract, and an unknown part from
    one that does not.
    """
    if isinstance(exc, SendInterrupted):
        cause = exc.cause
        text = (
            str(cause) if isinstance(cause, TaskfleetError) else f"{type(cause).__name__}: {cause}"
        )
        if exc.inserted == 0:
            return f"{redact(text)}\nnothing from this file was inserted; fix it and load it again."
        return (
            f"{redact(text)}\n{exc.inserted:,} tasks from this file were inserted before the "
            f"error; {_load_again(queue, 'loading again after the fix skips them')}."
        )
    if queue.atomic_send:
        return (
            f"{exc}\nnothing was inserted: the load is one transaction, rolled back at the "
            "error. Fix the file and load it again."
        )
    return (
        f"{exc}\nsome tasks from this file may have been inserted before the error; loading "
        "again after the fix skips them."
    )


@cli.command("status")
@queue_option
@click.option(
    "--flow-state",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="On SQS and Pub/Sub: the state file of the `taskfleet flow run` of this queue "
    "(its --state, TASK_FILE.flow-state.db unless given), read-only, for the flow's waiting "
    "and blocked tasks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(queue_url: str, flow_state: str | None, as_json: bool) -> None:
    """Show how many tasks are visible, leased, delayed, done and dead ("unknown", null in
    --json, for what the queue cannot count: Pub/Sub counts only its dead letters).

    \b
    Tasks waiting for their dependencies, and those blocked behind a dead letter, are
    counted by SQLite, Redis and memory queues; on SQS and Pub/Sub the flow coordinator
    holds them: give its state file with --flow-state.

    \b
    Examples:
      taskfleet status --queue sqlite:///job.db --json
      taskfleet status --queue sqs://job?region=us-west-2 --flow-state flow.json.flow-state.db
    """
    queue = open_existing_queue(queue_url)
    try:
        if flow_state is not None:
            _refuse_flow_state_of(queue, queue_url)
        stats = queue.stats()
    finally:
        queue.close()
    if flow_state is not None:
        stats = _with_flow_counts(stats, flow_state, queue_url)
    counts = {"queue": redact(queue_url), **stats.as_dict(), "counts_tasks": queue.counts_tasks}
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = Table(title=redact(queue_url) + (" (approximate)" if stats.approximate else ""))
    table.add_column("state")
    table.add_column("tasks", justify="right")
    for key, value in stats.as_dict().items():
        if key == "approximate":
            continue
        table.add_row(key, "unknown" if value is None else f"{value:,}")
    out.print(table)
    if not queue.counts_tasks:
        out.print("this queue cannot count its tasks: it counts only its dead letters")
    if flow_state is not None:
        out.print(f"waiting and blocked: from the flow's state file {flow_state}")


def _refuse_flow_state_of(queue: Queue, queue_url: str) -> None:
    """A queue that keeps its flow itself has no coordinator, so no state file to read."""
    if queue.tracks_dependencies:
        raise TaskfleetError(
            f"{redact(queue_url)} counts its waiting and blocked tasks itself (without "
            "--flow-state); --flow-state is for the queues `taskfleet flow run` coordinates: "
            "sqs://, pubsub://, fq://"
        )


def _with_flow_counts(stats: QueueStats, flow_state: str, queue_url: str) -> QueueStats:
    """The queue's counts with the coordinator's waiting and blocked tasks in them."""
    from taskfleet.flows.flow_status import held_tasks, open_flow_state

    state = open_flow_state(flow_state, queue_url)
    try:
        held = held_tasks(state)
    finally:
        state.close()
    return dataclasses.replace(stats, waiting=held.waiting, blocked=held.blocked)


@cli.command("purge")
@queue_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(queue_url: str, yes: bool) -> None:
    """Delete every task and dead letter of a queue.

    \b
    Example:
      taskfleet purge --queue sqlite:///job.db --yes
    """
    if not yes and not click.confirm(f"Delete every task in {redact(queue_url)}?"):
        raise TaskfleetError("nothing was deleted")
    queue = open_existing_queue(queue_url)
    try:
        queue.purge()
    finally:
        queue.close()
    out.print(f"purged {redact(queue_url)}")


@cli.command("release-all")
@queue_option
def release_all(queue_url: str) -> None:
    """Make every leased task visible again at once (after workers were killed), without
    counting the attempt. Only for queues whose workers are all stopped.

    \b
    Example:
      taskfleet release-all --queue sqlite:///job.db
    """
    queue = open_existing_queue(queue_url)
    try:
        released = queue.release_all()
    finally:
        queue.close()
    out.print(f"released {counted(released, 'leased task')}")


@cli.command("dead-letters")
@queue_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dead_letters(queue_url: str, as_json: bool) -> None:
    """List tasks whose attempts were spent, with their last error.

    \b
    Example:
      taskfleet dead-letters --queue sqlite:///job.db
    """
    queue = open_existing_queue(queue_url)
    try:
        letters = list(queue.dead_letters())
    finally:
        queue.close()
    if as_json:
        for letter in letters:
            click.echo(
                json.dumps(
                    {
                        "id": letter.task.id,
                        "data": letter.task.data,
                        "attempts": letter.attempts,
                        "error": letter.error,
                    }
                )
            )
        return
    table = Table(title=f"{len(letters):,} dead letters")
    table.add_column("task id")
    table.add_column("attempts", justify="right")
    table.add_column("last error", overflow="fold")
    for letter in letters:
        table.add_row(letter.task.id, str(letter.attempts), letter.error or "")
    out.print(table)


@cli.command("redrive")
@queue_option
@click.option("--id", "ids", multiple=True, metavar="TASK_ID", help="Redrive only these ids.")
def redrive(queue_url: str, ids: tuple[str, ...]) -> None:
    """Put dead letters back in the queue with fresh attempts (all, or those given by --id).

    \b
    Example:
      taskfleet redrive --queue sqlite:///job.db --id addition-task-000042
    """
    queue = open_existing_queue(queue_url)
    try:
        moved = queue.redrive(list(ids) if ids else None)
    finally:
        queue.close()
    out.print(f"redrove {counted(moved, 'task')}")
