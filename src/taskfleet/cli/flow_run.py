"""`taskfleet flow run`: the flow coordinator for SQS and Pub/Sub (`flows.coordinator`).

Thin: parse the options, run the coordinator, print what it says and the outcome, exit 0 when
every task completed, 2 when some are dead-lettered or blocked, 130 on Ctrl-C.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from taskfleet.cli.flow_commands import flow
from taskfleet.cli.queue_commands import queue_option
from taskfleet.flows.coordinator import FlowOptions, refuse_stateful, run_flow
from taskfleet.flows.flow_state import default_flow_state_path
from taskfleet.queues import event_queue_url
from taskfleet.redact import redact
from taskfleet.tasks.load_retry import outage_seconds_from_env
from taskfleet.tasks.loading import stop_on_first_interrupt


@flow.command("run")
@queue_option
@click.option("--task-file", required=True, metavar="PATH", help="JSON, JSONL or YAML task file.")
@click.option(
    "--event-queue",
    "event_queue",
    default=None,
    metavar="URL",
    help="The event queue the workers write to (default: the queue's, e.g. JOB-events). "
    "The coordinator consumes it: give --events-file to keep the events for monitor and report.",
)
@click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The flow's state file (default: TASK_FILE.flow-state.db); rerun with it to resume.",
)
@click.option(
    "--events-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every event read from the event queue (and a task_blocked event per blocked "
    "task) to this JSONL file, for `taskfleet monitor` and `taskfleet report`.",
)
def flow_run(
    queue_url: str,
    task_file: str,
    event_queue: str | None,
    state_path: Path | None,
    events_file: Path | None,
) -> None:
    """Run a flow on an SQS or Pub/Sub queue: send each task once the tasks it waits for
    ("after") have completed, with their results, following completions on the event queue.

    \b
    Start workers on the same queue (they write events to its event queue by default).
    Killed or interrupted, the same command resumes; after `taskfleet redrive` of a
    dead-lettered task, run it again and the blocked tasks run.

    \b
    Example:
      taskfleet flow run --queue sqs://job?region=us-west-2 --task-file flow.json
    """
    refuse_stateful(queue_url)
    options = FlowOptions(
        queue_url=queue_url,
        task_file=task_file,
        event_queue_url=event_queue or event_queue_url(queue_url),
        state_path=state_path or default_flow_state_path(task_file),
        events_file=events_file,
        outage_seconds=outage_seconds_from_env(),
    )
    with stop_on_first_interrupt() as stop:
        outcome = run_flow(options, notify=lambda line: click.echo(line, err=True), stop=stop)
    if outcome.interrupted:
        click.echo(
            f"interrupted: run the same command to resume (state in {options.state_path})",
            err=True,
        )
        sys.exit(130)
    counts = outcome.counts
    if outcome.exit_code == 0:
        click.echo(f"flow done: {counts.completed:,} tasks completed")
        return
    where = f"--queue {shlex.quote(redact(queue_url))}"
    shown = ", ".join(outcome.dead[:5]) + (" ..." if len(outcome.dead) > 5 else "")
    click.echo(
        f"flow stopped: {counts.completed:,} of {counts.total:,} completed, "
        f"{counts.dead:,} dead-lettered ({shown}), {counts.blocked:,} blocked behind them; "
        f"see `taskfleet dead-letters {where}`, and after a fix `taskfleet redrive {where}` "
        "and run this command again",
        err=True,
    )
    sys.exit(2)
