"""`taskfleet flow convert FILE -o OUT`: a flow as the task file every command takes."""

from __future__ import annotations

import os

import click

from taskfleet.cli.common import fail
from taskfleet.cli.flow_commands import flow


@flow.command("convert")
@click.argument("task_file", metavar="FILE")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="OUT.json|OUT.jsonl|OUT.flow",
    help="Where to write; the suffix names the format.",
)
def convert(task_file: str, output: str) -> None:
    """Convert a flow between .flow, JSON and JSON Lines (tasks with "after").

    \b
    The flow is checked first (unknown ids, cycles): a bad one writes nothing. The output is
    written whole and then renamed into place.

    \b
    Example:
      taskfleet flow convert job.flow -o tasks.jsonl
      taskfleet load-queue --queue sqlite:///job.db --task-file tasks.jsonl
    """
    from taskfleet.flows.convert import output_format, write_tasks
    from taskfleet.flows.shape import read_flow_tasks

    output_format(output)  # a bad suffix is refused before the flow is read
    if task_file != "-" and os.path.exists(output) and os.path.samefile(task_file, output):
        fail(f"{output}: is the file being converted; write to another file.")
    tasks = read_flow_tasks(task_file)
    write_tasks(tasks, output)
    waiting = sum(1 for task in tasks if task.after)
    click.echo(f"wrote {len(tasks):,} tasks ({waiting:,} wait for others) to {output}")
