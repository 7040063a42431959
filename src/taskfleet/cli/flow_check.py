"""`taskfleet flow check FILE`: read a flow, check its dependencies, and describe its shape."""

from __future__ import annotations

import click

from taskfleet.cli.flow_commands import flow

#: how many roots or leaves are named before "and N more"
SHOWN = 5


@flow.command("check")
@click.argument("task_file", metavar="FILE")
def check(task_file: str) -> None:
    """Check a flow (.flow, or a JSON, JSONL or YAML task file with "after") and show its shape.

    \b
    Prints the number of tasks and dependencies, the roots (tasks that wait for nothing), the
    leaves (tasks nothing waits for) and the depth (tasks on the longest chain). A bad file is
    one line naming the file, the place and what to do (exit code 1), and nothing else.

    \b
    Example:
      taskfleet flow check job.flow
    """
    from taskfleet.flows.shape import FlowShape, read_flow_tasks

    shape = FlowShape.of(read_flow_tasks(task_file))
    click.echo(f"{task_file}: ok, no unknown ids and no cycle")
    click.echo(
        f"  tasks         {shape.tasks:,} ({shape.waiting:,} wait for others, "
        f"{shape.dependencies:,} dependencies)"
    )
    click.echo(f"  roots         {_named(shape.roots)}")
    click.echo(f"  leaves        {_named(shape.leaves)}")
    click.echo(f"  depth         {shape.depth:,} ({_chain(shape.longest_chain)})")


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    more = len(ids) - SHOWN
    return f"{len(ids):,}: {shown}" + (f" and {more:,} more" if more > 0 else "")


def _chain(ids: list[str]) -> str:
    if len(ids) <= 2 * SHOWN:
        return " -> ".join(ids)
    return (
        " -> ".join(ids[:SHOWN])
        + f" -> ... ({len(ids) - 2 * SHOWN:,} more) -> "
        + (" -> ".join(ids[-SHOWN:]))
    )
