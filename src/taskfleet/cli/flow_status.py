"""`taskfleet flow status`: where a coordinated flow stands, from its state file (read-only,
safe while `taskfleet flow run` runs; see `flows.flow_status`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from taskfleet.cli.flow_commands import flow
from taskfleet.errors import TaskfleetError
from taskfleet.flows.flow_state import Counts, FlowState, default_flow_state_path
from taskfleet.flows.flow_status import HeldTasks, open_flow_state, read_at_once

#: Dead-lettered tasks named in the text output; --json names them all.
SHOWN = 5


@flow.command("status")
@click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The flow's state file (the --state of `taskfleet flow run`).",
)
@click.option(
    "--task-file",
    default=None,
    metavar="PATH",
    help="The flow's task file: its state is TASK_FILE.flow-state.db.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def flow_status(state_path: Path | None, task_file: str | None, as_json: bool) -> None:
    """Show where a flow run by `taskfleet flow run` stands: completed, sent, waiting,
    dead-lettered, and blocked behind a dead letter (which run only after a redrive).

    \b
    Example:
      taskfleet flow status --task-file flow.json
      taskfleet flow status --state flow.json.flow-state.db --json
    """
    if (state_path is None) == (task_file is None):
        raise TaskfleetError("give the flow's --state or its --task-file (one of them)")
    path = state_path or default_flow_state_path(task_file or "")

    def read(s: FlowState) -> tuple[Counts, list[str], dict[str, str], str | None]:
        dead = s.dead_ids()
        return s.counts(), dead, dict(s.blocked_by(dead)), s.meta("queue")

    state = open_flow_state(path)
    try:
        counts, dead, blocked, queue = read_at_once(state, read)
    finally:
        state.close()
    held = HeldTasks.of(counts)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "state": str(path),
                    "queue": queue,
                    "total": counts.total,
                    "completed": counts.completed,
                    "sent": counts.sent,
                    "to_send": counts.to_send,
                    "waiting": held.waiting,
                    "blocked": held.blocked,
                    "dead": counts.dead,
                    "dead_ids": dead,
                    "blocked_by": blocked,
                }
            )
        )
        return
    click.echo(f"{queue}: {counts.line()}")
    if dead:
        more = f" and {len(dead) - SHOWN:,} more" if len(dead) > SHOWN else ""
        click.echo(
            f"dead-lettered: {', '.join(dead[:SHOWN])}{more}; after a fix, `taskfleet redrive` "
            "and run `taskfleet flow run` again"
        )
