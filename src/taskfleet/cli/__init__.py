"""The `taskfleet` command line. Commands are thin: parse, call the layers below, print.

Each group of commands lives in its own module and registers itself on `main`; errors a user
can cause (`TaskfleetError`) are printed as one clear message with exit code 1, never a
traceback.
"""

from __future__ import annotations

import sys

import click

from taskfleet.cli.common import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="taskfleet")
def cli() -> None:
    """taskfleet: run large batches of independent tasks in parallel.

    \b
    Example:
      taskfleet load-queue --queue sqlite:///job.db --task-file tasks.jsonl
      taskfleet status --queue sqlite:///job.db
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run_cli(cli, argv))


# Command modules register themselves on `cli` when imported.
from taskfleet.cli import (  # noqa: E402, F401
    flow_commands,
    monitor_commands,
    pool_commands,
    queue_commands,
    work_command,
)
